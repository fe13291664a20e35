//! Runs steps as plain processes (`sh -c`) for hosts without Docker: same environment,
//! working directory, timeout and cancellation contract, no isolation or resource limits.

use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::process::Command;

use super::{Executor, StepContext, step_env};
use crate::logs::LogSink;
use shardci_types::{FailureClass, StepSpec};

use crate::outcome::StepOutcome;

#[derive(Debug, Default, Clone)]
pub struct ProcessExecutor;

fn signal_group(pid: u32, signal: i32) {
    if let Ok(pid) = i32::try_from(pid) {
        // SAFETY: kill(2) with a negative pid signals a process group; no memory is touched.
        unsafe {
            libc::kill(-pid, signal);
        }
    }
}

#[async_trait::async_trait]
impl Executor for ProcessExecutor {
    fn name(&self) -> &'static str {
        "process"
    }

    async fn run(&self, step: &StepSpec, ctx: &StepContext, logs: &mut dyn LogSink) -> StepOutcome {
        let started = Instant::now();
        if step.regression.is_some() {
            return StepOutcome::failed(
                &step.name,
                FailureClass::Docker,
                started.elapsed(),
                "a regression step runs connector images: it needs the Docker executor",
            );
        }
        if step.build_image.is_some() {
            return StepOutcome::failed(
                &step.name,
                FailureClass::Docker,
                started.elapsed(),
                "this step builds an image, which needs the docker executor",
            );
        }
        let work = ctx.work_dir.to_string_lossy().into_owned();
        if let Err(e) = std::fs::create_dir_all(ctx.work_dir.join("tmp")) {
            return StepOutcome::failed(
                &step.name,
                FailureClass::Source,
                started.elapsed(),
                format!("failed to create the work dir: {e}"),
            );
        }
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(&step.command)
            .current_dir(ctx.source_dir.join(&step.workdir))
            .env_clear()
            .env(
                "PATH",
                std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()),
            )
            .envs(step_env(step, ctx, &work))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(e) => {
                return StepOutcome::failed(
                    &step.name,
                    FailureClass::Source,
                    started.elapsed(),
                    format!("failed to start sh in {}: {e}", step.workdir),
                );
            }
        };
        let pid = child.id().unwrap_or(0);
        let (Some(mut stdout), Some(mut stderr)) = (child.stdout.take(), child.stderr.take())
        else {
            return StepOutcome::failed(
                &step.name,
                FailureClass::Source,
                started.elapsed(),
                "no output pipes",
            );
        };
        let deadline = tokio::time::sleep(step.timeout);
        tokio::pin!(deadline);
        let (mut out_buf, mut err_buf) = ([0u8; 8192], [0u8; 8192]);
        let (mut out_open, mut err_open) = (true, true);
        let mut stopping: Option<(FailureClass, Instant)> = None;
        let status = loop {
            tokio::select! {
                n = stdout.read(&mut out_buf), if out_open => match n {
                    Ok(0) | Err(_) => out_open = false,
                    Ok(n) => logs.write(&out_buf[..n]),
                },
                n = stderr.read(&mut err_buf), if err_open => match n {
                    Ok(0) | Err(_) => err_open = false,
                    Ok(n) => logs.write(&err_buf[..n]),
                },
                status = child.wait() => break status,
                _ = &mut deadline, if stopping.is_none() => {
                    logs.write(format!("\n[shardci] step timed out after {:?}; stopping\n", step.timeout).as_bytes());
                    signal_group(pid, libc::SIGTERM);
                    stopping = Some((FailureClass::Timeout, Instant::now()));
                }
                _ = ctx.cancel.cancelled(), if stopping.is_none() => {
                    logs.write(b"\n[shardci] cancelled; stopping\n");
                    signal_group(pid, libc::SIGTERM);
                    stopping = Some((FailureClass::WorkerLost, Instant::now()));
                }
                _ = tokio::time::sleep(Duration::from_millis(100)), if stopping.is_some_and(|(_, at)| at.elapsed() >= ctx.stop_grace) => {
                    signal_group(pid, libc::SIGKILL);
                }
            }
        };
        // The shell is gone; take what is left in the pipes, but do not wait on a background
        // process that inherited them.
        let drain = async {
            while out_open || err_open {
                tokio::select! {
                    n = stdout.read(&mut out_buf), if out_open => match n {
                        Ok(0) | Err(_) => out_open = false,
                        Ok(n) => logs.write(&out_buf[..n]),
                    },
                    n = stderr.read(&mut err_buf), if err_open => match n {
                        Ok(0) | Err(_) => err_open = false,
                        Ok(n) => logs.write(&err_buf[..n]),
                    },
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
        signal_group(pid, libc::SIGKILL);
        logs.finish();
        let elapsed = started.elapsed();
        match (stopping, status) {
            (Some((FailureClass::Timeout, _)), _) => StepOutcome::failed(
                &step.name,
                FailureClass::Timeout,
                elapsed,
                format!("timed out after {:?}", step.timeout),
            ),
            (Some(_), _) => StepOutcome::cancelled(&step.name, elapsed),
            (None, Ok(status)) if status.success() => StepOutcome::success(&step.name, elapsed),
            (None, Ok(status)) => {
                let mut outcome = StepOutcome::failed(
                    &step.name,
                    FailureClass::Test,
                    elapsed,
                    format!("exited with {status}"),
                );
                outcome.exit_code = status.code().map(i64::from);
                outcome
            }
            (None, Err(e)) => StepOutcome::failed(
                &step.name,
                FailureClass::Source,
                elapsed,
                format!("failed to wait for the step: {e}"),
            ),
        }
    }
}
