//! Running host programs with useful errors.

use std::process::{Command, Output};

use anyhow::{Context, Result, bail};

/// A shell-like rendering of a command, for messages.
pub fn describe(command: &Command) -> String {
    let mut words = vec![command.get_program().to_string_lossy().into_owned()];
    words.extend(
        command
            .get_args()
            .map(|arg| arg.to_string_lossy().into_owned()),
    );
    words.join(" ")
}

/// Runs `command` with inherited stdio and fails unless it exits successfully.
pub fn run_checked(command: &mut Command) -> Result<()> {
    let status = command
        .status()
        .with_context(|| format!("could not start `{}`", describe(command)))?;
    if !status.success() {
        bail!("`{}` failed: {status}", describe(command));
    }
    Ok(())
}

/// Runs `command` with captured output; on failure the error carries its stdout and stderr.
pub fn run_captured(command: &mut Command) -> Result<Output> {
    let output = command
        .output()
        .with_context(|| format!("could not start `{}`", describe(command)))?;
    if !output.status.success() {
        bail!(
            "`{}` failed: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            describe(command),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
        );
    }
    Ok(output)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_program_and_arguments() {
        let mut command = Command::new("echo");
        command.args(["a", "b c"]);
        assert_eq!(describe(&command), "echo a b c");
    }

    #[test]
    fn captured_failure_reports_output() {
        let error = run_captured(Command::new("sh").args(["-c", "echo oops >&2; exit 3"]))
            .unwrap_err()
            .to_string();
        assert!(error.contains("oops"), "{error}");
        assert!(error.contains("exit status: 3"), "{error}");
    }
}
