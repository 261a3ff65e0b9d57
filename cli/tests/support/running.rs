//! What several tests of the `trestle` command share: a started `trestle` process that is
//! killed when the test ends, passed or not.

use std::process::Child;

/// A child process, killed and reaped on drop.
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
