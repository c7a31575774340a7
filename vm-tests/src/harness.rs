//! A tiny test runner: named tests, each run with a unique name prefix and a
//! fresh tokio runtime, reported as `ok NAME` / `FAIL NAME: reason`.

use std::time::{Duration, Instant};

pub type TestResult = Result<(), String>;

/// Everything a test gets: a unique prefix for the names of what it creates.
pub struct Ctx {
    pub prefix: String,
    pub env: Env,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Env {
    Kernel,
    Gvisor,
}

impl Env {
    pub fn name(self) -> &'static str {
        match self {
            Env::Kernel => "kernel",
            Env::Gvisor => "gvisor",
        }
    }

    pub fn parse(s: &str) -> Option<Env> {
        match s {
            "kernel" => Some(Env::Kernel),
            "gvisor" => Some(Env::Gvisor),
            _ => None,
        }
    }
}

pub struct Test {
    pub name: &'static str,
    pub run: fn(&Ctx) -> TestResult,
}

#[derive(Default)]
pub struct Tally {
    pub passed: usize,
    pub failed: usize,
}

impl Tally {
    pub fn record(&mut self, name: &str, result: TestResult, secs: f64) {
        match result {
            Ok(()) => {
                self.passed += 1;
                println!("ok {name} ({secs:.2}s)");
            }
            Err(reason) => {
                self.failed += 1;
                println!("FAIL {name}: {reason}");
            }
        }
    }
}

pub fn run_tests(tests: &[Test], env: Env, filter: Option<&str>, tally: &mut Tally) {
    for (i, test) in tests.iter().enumerate() {
        if filter.is_some_and(|f| !test.name.contains(f)) {
            continue;
        }
        let ctx = Ctx {
            // Short enough that prefix + 5 chars fits an interface name.
            prefix: format!("t{:x}{i}", std::process::id() % 0xfff),
            env,
        };
        let start = Instant::now();
        let mut result = std::panic::catch_unwind(|| (test.run)(&ctx))
            .unwrap_or_else(|_| Err("panicked".to_string()));
        // Whatever the outcome, nothing may stay behind: clean up and fail
        // the test if it leaked.
        let left = crate::isolation::leftovers_after_grace(&ctx.prefix, Duration::from_secs(3));
        if !left.is_empty() {
            let stuck = crate::isolation::cleanup(&ctx.prefix);
            let leak = format!("left behind {left:?} (not removable: {stuck:?})");
            result = match result {
                Ok(()) => Err(leak),
                Err(e) => Err(format!("{e}; {leak}")),
            };
        }
        tally.record(test.name, result, start.elapsed().as_secs_f64());
    }
}

/// Run an async test body on a fresh current-thread runtime.
pub fn block_on<F: std::future::Future<Output = TestResult>>(f: F) -> TestResult {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?
        .block_on(f)
}

/// `ensure!(cond, "message {}", x)` for tests that return TestResult.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($arg:tt)+) => {
        if !$cond {
            return Err(format!($($arg)+));
        }
    };
}

/// Turn any displayable error into a test failure with context.
pub trait Context<T> {
    fn ctx(self, what: &str) -> Result<T, String>;
}

impl<T, E: std::fmt::Display> Context<T> for Result<T, E> {
    fn ctx(self, what: &str) -> Result<T, String> {
        self.map_err(|e| format!("{what}: {e}"))
    }
}
