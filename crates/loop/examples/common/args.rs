//! Command-line arguments of the examples: `--help` prints the usage; a bad,
//! missing or out-of-range argument prints the usage and the reason on
//! stderr and exits with status 2, before anything runs.

/// The arguments after the program's name, and the usage line to print.
pub(crate) struct Args {
    usage: &'static str,
    args: Vec<String>,
}

impl Args {
    /// Reads the arguments; `--help` or `-h` prints `usage` and exits 0,
    /// and more than `max` arguments is an error.
    pub(crate) fn parse(usage: &'static str, max: usize) -> Args {
        Args::parse_with_flags(usage, max, &[]).0
    }

    /// As [`parse`](Args::parse), taking out the `flags` given (anywhere
    /// among the arguments) and saying which were.
    pub(crate) fn parse_with_flags(
        usage: &'static str,
        max: usize,
        flags: &[&str],
    ) -> (Args, Vec<bool>) {
        let mut args: Vec<String> = std::env::args().skip(1).collect();
        let given: Vec<bool> = flags
            .iter()
            .map(|f| {
                let had = args.iter().any(|a| a == f);
                args.retain(|a| a != f);
                had
            })
            .collect();
        if args.iter().any(|a| a == "--help" || a == "-h") {
            println!("{usage}");
            std::process::exit(0);
        }
        let me = Args { usage, args };
        if me.args.len() > max {
            me.fail(&format!("at most {max} arguments, got {}", me.args.len()));
        }
        (me, given)
    }

    /// The arguments as given.
    pub(crate) fn all(&self) -> &[String] {
        &self.args
    }

    /// Argument `i`, a whole number from `min` up, or `default` if absent.
    pub(crate) fn number(&self, i: usize, name: &str, min: u64, default: u64) -> u64 {
        match self.args.get(i) {
            None => default,
            Some(a) => match a.parse::<u64>() {
                Ok(n) if n >= min => n,
                Ok(n) => self.fail(&format!("{name} must be at least {min}, got {n}")),
                Err(_) => self.fail(&format!("{name} must be a whole number, got {a:?}")),
            },
        }
    }

    /// Argument `i`, one of `choices`, or the first choice if absent.
    pub(crate) fn choice(&self, i: usize, name: &str, choices: &[&'static str]) -> &'static str {
        match self.args.get(i) {
            None => choices[0],
            Some(a) => match choices.iter().find(|c| **c == a.as_str()) {
                Some(c) => c,
                None => self.fail(&format!(
                    "{name} must be one of {}, got {a:?}",
                    choices.join(", ")
                )),
            },
        }
    }

    /// Prints the usage and `why` on stderr and exits with status 2.
    pub(crate) fn fail(&self, why: &str) -> ! {
        eprintln!("{}\nerror: {why}", self.usage);
        std::process::exit(2);
    }
}
