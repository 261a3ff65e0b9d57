//! The driver's command line: what to run, how much, and how to watch it.

use clap::{Parser, ValueEnum};

#[derive(Parser)]
pub(crate) struct Args {
    /// Runs of every scenario; the table shows medians.
    #[arg(long, default_value_t = 3)]
    pub(crate) runs: usize,
    /// Scenarios to run.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "echo,echo1,ghosts,flood"
    )]
    pub(crate) scenarios: Vec<Scenario>,
    /// Rooms the messages are spread over.
    #[arg(long, default_value_t = 20)]
    pub(crate) rooms: usize,
    /// echo: messages (the peak RSS is measured during these).
    #[arg(long, default_value_t = 20_000)]
    pub(crate) echo_events: usize,
    /// echo: messages per transaction.
    #[arg(long, default_value_t = 50)]
    pub(crate) echo_batch: usize,
    /// echo1: messages, one per transaction.
    #[arg(long, default_value_t = 4_000)]
    pub(crate) echo1_events: usize,
    /// ghosts: messages, each from a new user answered by its ghost.
    #[arg(long, default_value_t = 5_000)]
    pub(crate) ghosts: usize,
    /// ghosts: messages per transaction.
    #[arg(long, default_value_t = 50)]
    pub(crate) ghost_batch: usize,
    /// flood: messages.
    #[arg(long, default_value_t = 30_000)]
    pub(crate) flood_events: usize,
    /// flood: messages per transaction.
    #[arg(long, default_value_t = 100)]
    pub(crate) flood_batch: usize,
    /// flood: milliseconds each handler takes.
    #[arg(long, default_value_t = 5)]
    pub(crate) flood_delay_ms: u64,
    /// Echoes sent (untimed) before each measurement, after the idle RSS is taken.
    #[arg(long, default_value_t = 1_000)]
    pub(crate) warmup: usize,
    /// How long a fresh process is left alone before its idle RSS is taken.
    #[arg(long, default_value_t = 1_500)]
    pub(crate) settle_ms: u64,
    /// Give up on a scenario when no echo arrived for this many seconds.
    #[arg(long, default_value_t = 60)]
    pub(crate) stall_s: u64,
    /// Appservices to measure.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "null,trestle"
    )]
    pub(crate) apps: Vec<App>,
    /// Runs each appservice inside this command, split at spaces — for profiling, e.g.
    /// `--apps trestle --wrap "valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.out"`.
    /// Memory and time figures are then those of the wrapper.
    #[arg(long)]
    pub(crate) wrap: Option<String>,
    /// Runs this command, split at spaces and with the appservice's pid added, when its idle
    /// RSS is taken — for what start-up alone does, e.g. `--at-idle "callgrind_control -d"`
    /// with a callgrind `--wrap` dumps the counts up to then (`bench/link-order.sh`).
    #[arg(long)]
    pub(crate) at_idle: Option<String>,
    /// Pins each appservice to CPU 0 (`taskset -c 0`, inside any `--wrap`) and this driver,
    /// with its mock homeserver, to the other CPUs: the appservice's figures are then those of
    /// one core, as single-threaded peers (Node, Python) are measured, and the driver does not
    /// take that core's time.
    #[arg(long)]
    pub(crate) pin: bool,
    /// More arguments for bench-echo, split at spaces — for analysis, e.g.
    /// `--echo-args "--database sqlite::memory:"`.
    #[arg(long, allow_hyphen_values = true)]
    pub(crate) echo_args: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, ValueEnum)]
pub(crate) enum Scenario {
    /// `!echo` in transactions of `--echo-batch`.
    Echo,
    /// `!echo` one per transaction.
    Echo1,
    /// `!ghost`, every message from a new user.
    Ghosts,
    /// A slow handler, pushed faster than it handles.
    Flood,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, ValueEnum)]
pub(crate) enum App {
    Null,
    Trestle,
}

impl App {
    pub(crate) fn binary(self) -> &'static str {
        match self {
            App::Null => "null-appservice",
            App::Trestle => "bench-echo",
        }
    }
}
