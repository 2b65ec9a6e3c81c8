//! Tokens, interests and the events a poll reports.

use std::fmt;

/// Identifies a registration or a waker in the events a poll reports.
///
/// Tokens come back exactly as given. The sixteen highest,
/// `Token(usize::MAX - 15)` to `Token(usize::MAX)`, are reserved for the
/// poller's own use and refused by [`Poller::register`] and [`Waker::new`];
/// `Token(usize::MAX)` is the token of [`Event::is_completions`] events.
///
/// [`Poller::register`]: crate::Poller::register
/// [`Waker::new`]: crate::Waker::new
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Token(pub usize);

impl Token {
    /// The token of the event that says completions are ready.
    pub(crate) const RESERVED: Token = Token(usize::MAX);
    /// The lowest of the tokens the poller keeps for itself.
    pub const FIRST_RESERVED: Token = Token(usize::MAX - 15);

    /// Whether the poller keeps this token for itself.
    pub const fn is_reserved(self) -> bool {
        self.0 >= Token::FIRST_RESERVED.0
    }
}

impl From<usize> for Token {
    fn from(t: usize) -> Token {
        Token(t)
    }
}

impl From<Token> for usize {
    fn from(t: Token) -> usize {
        t.0
    }
}

/// The readiness a registration asks to be told about.
///
/// Combine with `|`: `Interest::READABLE | Interest::WRITABLE`. Errors and
/// hang-ups are always reported.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Interest(u8);

impl Interest {
    /// Readable: data to read, a peer that closed its end, or an error.
    pub const READABLE: Interest = Interest(1);
    /// Writable: room to write.
    pub const WRITABLE: Interest = Interest(2);

    /// Whether readability is asked for.
    pub const fn is_readable(self) -> bool {
        self.0 & 1 != 0
    }

    /// Whether writability is asked for.
    pub const fn is_writable(self) -> bool {
        self.0 & 2 != 0
    }

    /// Both interests together.
    pub const fn add(self, other: Interest) -> Interest {
        Interest(self.0 | other.0)
    }

    /// The `poll(2)` / `epoll(7)` mask for this interest.
    pub(crate) fn poll_mask(self) -> u32 {
        let mut mask = 0;
        if self.is_readable() {
            mask |= flags::IN | flags::RDHUP;
        }
        if self.is_writable() {
            mask |= flags::OUT;
        }
        mask
    }
}

impl std::ops::BitOr for Interest {
    type Output = Interest;

    fn bitor(self, other: Interest) -> Interest {
        self.add(other)
    }
}

impl std::ops::BitOrAssign for Interest {
    fn bitor_assign(&mut self, other: Interest) {
        *self = self.add(other);
    }
}

impl fmt::Debug for Interest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.is_readable(), self.is_writable()) {
            (true, true) => f.write_str("READABLE | WRITABLE"),
            (true, false) => f.write_str("READABLE"),
            (false, true) => f.write_str("WRITABLE"),
            (false, false) => f.write_str("(none)"),
        }
    }
}

/// The readiness bits shared by `poll(2)` and `epoll(7)`.
pub(crate) mod flags {
    pub(crate) const IN: u32 = 0x001;
    pub(crate) const PRI: u32 = 0x002;
    pub(crate) const OUT: u32 = 0x004;
    pub(crate) const ERR: u32 = 0x008;
    pub(crate) const HUP: u32 = 0x010;
    pub(crate) const RDHUP: u32 = 0x2000;
}

/// One readiness report.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Event {
    token: Token,
    mask: u32,
}

impl Event {
    pub(crate) fn from_mask(token: Token, mask: u32) -> Event {
        Event { token, mask }
    }

    pub(crate) fn wake(token: Token) -> Event {
        Event {
            token,
            mask: flags::IN,
        }
    }

    pub(crate) fn completions() -> Event {
        Event {
            token: Token::RESERVED,
            mask: flags::IN,
        }
    }

    /// Whether this event says that operations have completed: take them
    /// with [`Poller::take_completions`](crate::Poller::take_completions).
    /// Its token is `Token(usize::MAX)`.
    pub fn is_completions(&self) -> bool {
        self.token == Token::RESERVED
    }

    /// The token of the registration or waker.
    pub fn token(&self) -> Token {
        self.token
    }

    /// Readable: data, end-of-file, a peer's shutdown, or a waker's wake.
    pub fn is_readable(&self) -> bool {
        self.mask & (flags::IN | flags::PRI | flags::RDHUP | flags::HUP) != 0
    }

    /// Writable.
    pub fn is_writable(&self) -> bool {
        self.mask & flags::OUT != 0
    }

    /// An error is pending on the file (`POLLERR`), or the registration failed
    /// in the kernel after it was accepted.
    pub fn is_error(&self) -> bool {
        self.mask & flags::ERR != 0
    }

    /// The peer closed its end, or both ends are shut (`POLLHUP`/`POLLRDHUP`).
    pub fn is_hangup(&self) -> bool {
        self.mask & (flags::HUP | flags::RDHUP) != 0
    }
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event")
            .field("token", &self.token)
            .field("readable", &self.is_readable())
            .field("writable", &self.is_writable())
            .field("error", &self.is_error())
            .field("hangup", &self.is_hangup())
            .finish()
    }
}

/// The buffer a poll fills.
///
/// Its capacity is fixed at creation; a poll replaces the contents and never
/// reports more events than the capacity (wakes included). Events not
/// reported stay pending for the next poll.
#[derive(Clone, Debug)]
pub struct Events {
    list: Vec<Event>,
    capacity: usize,
}

impl Events {
    /// A buffer for up to `capacity` events per poll.
    ///
    /// # Panics
    ///
    /// If `capacity` is 0: such a buffer could never report anything.
    pub fn with_capacity(capacity: usize) -> Events {
        assert!(
            capacity > 0,
            "Events::with_capacity(0) could never report an event"
        );
        Events {
            list: Vec::with_capacity(capacity),
            capacity,
        }
    }

    /// The most events one poll reports.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// How many events the last poll reported.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Whether the last poll reported nothing.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The events of the last poll.
    pub fn iter(&self) -> std::slice::Iter<'_, Event> {
        self.list.iter()
    }

    /// Empties the buffer.
    pub fn clear(&mut self) {
        self.list.clear();
    }

    pub(crate) fn is_full(&self) -> bool {
        self.list.len() >= self.capacity
    }

    pub(crate) fn room(&self) -> usize {
        self.capacity - self.list.len()
    }

    pub(crate) fn push(&mut self, event: Event) {
        debug_assert!(!self.is_full());
        self.list.push(event);
    }
}

impl<'a> IntoIterator for &'a Events {
    type Item = &'a Event;
    type IntoIter = std::slice::Iter<'a, Event>;

    fn into_iter(self) -> Self::IntoIter {
        self.list.iter()
    }
}
