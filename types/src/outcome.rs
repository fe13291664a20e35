//! How a run, shard, job or step ended, and why it did not succeed.

string_enum! {
    /// The state of a run, shard, job or step. Steps and jobs end in one of the final five.
    pub enum Status {
        /// Waiting for a worker.
        Queued => "queued",
        /// On a worker now.
        Running => "running",
        /// Ran and passed.
        Success => "success",
        /// Ran and its tests failed.
        Failure => "failure",
        /// Did not run, with a reason (a dependency failed, a suite is disabled).
        Skipped => "skipped",
        /// Stopped on request or by a deadline.
        Cancelled => "cancelled",
        /// The infrastructure failed it (see its [`FailureClass`]).
        Error => "error",
    }
}

impl Status {
    /// Whether nothing more will happen to it.
    pub fn is_final(self) -> bool {
        !matches!(self, Status::Queued | Status::Running)
    }

    /// Whether it counts against the run (a failed test or an infrastructure error).
    pub fn is_failed(self) -> bool {
        matches!(self, Status::Failure | Status::Error)
    }

    /// Whether it ran to an answer about the code (passed or failed), as opposed to being
    /// skipped, cancelled or broken by the infrastructure: only these durations mean anything.
    pub fn ran_to_verdict(self) -> bool {
        matches!(self, Status::Success | Status::Failure)
    }
}

string_enum! {
    /// Why something did not succeed; all but `Test` are the infrastructure's fault.
    pub enum FailureClass {
        /// The step's command failed.
        Test => "test",
        /// The step ran past its timeout.
        Timeout => "timeout",
        /// The step ran out of memory.
        Oom => "oom",
        /// The worker running it went away.
        WorkerLost => "worker_lost",
        /// The container runtime failed.
        Docker => "docker",
        /// The step's image could not be found or built.
        Image => "image",
        /// The source tree could not be fetched.
        Source => "source",
    }
}

impl FailureClass {
    /// Infrastructure failures are retried automatically; test failures only when the test
    /// type allows it.
    pub fn is_infrastructure(self) -> bool {
        self != FailureClass::Test
    }

    /// The status a step or job ends in when it fails for this reason.
    pub fn status(self) -> Status {
        if self.is_infrastructure() {
            Status::Error
        } else {
            Status::Failure
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_forms_round_trip_through_parse_and_serde() {
        for &status in Status::ALL {
            assert_eq!(status.as_str().parse::<Status>(), Ok(status));
            let json = serde_json::to_string(&status).expect("serialise");
            assert_eq!(json, format!("\"{status}\""));
            assert_eq!(
                serde_json::from_str::<Status>(&json).expect("parse"),
                status
            );
        }
        for &class in FailureClass::ALL {
            assert_eq!(class.as_str().parse::<FailureClass>(), Ok(class));
        }
        assert_eq!("worker-lost".parse(), Ok(FailureClass::WorkerLost));
    }

    #[test]
    fn unknown_text_names_the_type_and_the_choices() {
        let err = "passed".parse::<Status>().expect_err("not a status");
        assert_eq!(
            err.to_string(),
            "unknown Status \"passed\" (expected one of: queued, running, success, failure, skipped, cancelled, error)"
        );
        assert!(serde_json::from_str::<Status>("\"passed\"").is_err());
    }

    #[test]
    fn only_test_failures_are_not_infrastructure() {
        for &class in FailureClass::ALL {
            assert_eq!(class.is_infrastructure(), class != FailureClass::Test);
            assert!(class.status().is_failed());
        }
    }
}
