//! What a simulation runs: jobs with a true duration (what the run will take) and an estimate
//! (what the planner believes), from duration history or generated.

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, LogNormal, Normal};

use shardci_planning::config::parse_duration;
use shardci_planning::plan::Plan;

/// One job of a simulated run.
#[derive(Debug, Clone, PartialEq)]
pub struct SimJob {
    pub id: String,
    pub connector: String,
    pub requires: Vec<String>,
    /// How long the job's own work really takes, in seconds: without the step it shares with
    /// its connector's other jobs (`needs`), which its provider job runs.
    pub actual_seconds: f64,
    /// What the planner was told, in seconds.
    pub estimate_seconds: f64,
    /// The step this job needs that another job of the workload provides (its connector's
    /// build): shardci runs it once; a CI tool without shared steps runs it in every job.
    pub needs: Option<Need>,
}

/// A shared step a job needs: the job that provides it, and how long it takes.
#[derive(Debug, Clone, PartialEq)]
pub struct Need {
    pub provider: String,
    pub seconds: f64,
    pub estimate_seconds: f64,
}

impl SimJob {
    /// What the job costs when it runs its shared step itself (every job builds).
    pub fn with_own_build_seconds(&self) -> f64 {
        self.actual_seconds + self.needs.as_ref().map_or(0.0, |n| n.seconds)
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Workload {
    /// In plan order (connector, then test type, then matrix point).
    pub jobs: Vec<SimJob>,
}

impl Workload {
    /// The unique work: every job's own work once, shared steps once (in their providers).
    pub fn total_seconds(&self) -> f64 {
        self.jobs.iter().map(|j| j.actual_seconds).sum()
    }

    /// What the run costs when every job runs its shared step itself.
    pub fn total_with_own_builds_seconds(&self) -> f64 {
        self.jobs.iter().map(SimJob::with_own_build_seconds).sum()
    }

    /// `max(unique work / slots, longest chain)`, a chain being a job after the step it
    /// needs: no schedule can finish sooner.
    pub fn lower_bound(&self, slots: u32) -> f64 {
        let longest = self
            .jobs
            .iter()
            .map(SimJob::with_own_build_seconds)
            .fold(0.0, f64::max);
        (self.total_seconds() / f64::from(slots.max(1))).max(longest)
    }

    /// A plan's jobs, taking its estimates (from history where it had some) as the truth. A
    /// job that shares a step another job of the plan runs (its connector's build job) needs
    /// that job, and its own work leaves the step out.
    pub fn from_plan(plan: &Plan) -> Workload {
        let providers = shardci_planning::plan::providers(&plan.jobs);
        let by_id: std::collections::BTreeMap<&str, &shardci_planning::plan::Job> =
            plan.jobs.iter().map(|j| (j.id.as_str(), j)).collect();
        Workload {
            jobs: plan
                .jobs
                .iter()
                .map(|job| {
                    let provider = providers
                        .get(&job.id)
                        .and_then(|ids| ids.first())
                        .and_then(|id| by_id.get(id.as_str()));
                    let needs = provider.map(|p| {
                        let seconds = shardci_planning::plan::provided_seconds(job, &[p]);
                        Need {
                            provider: p.id.clone(),
                            seconds,
                            estimate_seconds: seconds,
                        }
                    });
                    let shared = needs.as_ref().map_or(0.0, |n| n.seconds);
                    let own = (job.expected_seconds - shared).max(0.0);
                    SimJob {
                        id: job.id.clone(),
                        connector: job.connector.clone(),
                        requires: job.requires.clone(),
                        actual_seconds: own,
                        estimate_seconds: own,
                        needs,
                    }
                })
                .collect(),
        }
    }

    /// Makes every estimate wrong by a log-normal factor with the given sigma (0.3: about
    /// 30 % off either way), keeping the true durations.
    pub fn perturb(&mut self, estimate_error: f64, seed: u64) {
        if estimate_error <= 0.0 {
            return;
        }
        let mut rng = StdRng::seed_from_u64(seed ^ 0x05ee_de57);
        let Ok(error) = Normal::new(0.0, estimate_error) else {
            return;
        };
        for job in &mut self.jobs {
            job.estimate_seconds = job.actual_seconds * error.sample(&mut rng).exp();
            if let Some(need) = &mut job.needs {
                need.estimate_seconds = need.seconds * error.sample(&mut rng).exp();
            }
        }
    }
}

/// `connectors=600,test-types=6,matrix=3x2,durations=lognormal:median=90s:sigma=1.2,
/// build=lognormal:median=30s:sigma=0.5,estimate-error=0.3,seed=1`.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntheticSpec {
    pub connectors: u32,
    pub test_types: u32,
    /// Matrix axes' sizes; the points are their product.
    pub matrix: Vec<u32>,
    /// The test step of each job.
    pub test: LogNormalSpec,
    /// Each connector's build: one duration per connector, run by its build job and needed
    /// by every other job of the connector.
    pub build: LogNormalSpec,
    pub estimate_error: f64,
    /// The fraction of connectors unchanged since a run that passed: their build and tests
    /// come from the step cache (a full-matrix run on main after a small change). The planner
    /// still expects their usual durations; it learns durations only from executions.
    pub cache_hits: f64,
    pub seed: u64,
}

/// What taking a step from the cache costs (reading its record, restoring its outputs).
pub const CACHE_RESTORE_SECONDS: f64 = 1.0;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LogNormalSpec {
    pub median_seconds: f64,
    pub sigma: f64,
}

impl Default for SyntheticSpec {
    fn default() -> Self {
        Self {
            connectors: 600,
            test_types: 6,
            matrix: vec![3, 2],
            test: LogNormalSpec {
                median_seconds: 90.0,
                sigma: 1.2,
            },
            build: LogNormalSpec {
                median_seconds: 30.0,
                sigma: 0.5,
            },
            estimate_error: 0.3,
            cache_hits: 0.0,
            seed: 1,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--synthetic {key}: {message}")]
pub struct SpecError {
    pub key: String,
    pub message: String,
}

fn spec_error(key: &str, message: impl Into<String>) -> SpecError {
    SpecError {
        key: key.to_string(),
        message: message.into(),
    }
}

fn parse_lognormal(key: &str, text: &str) -> Result<LogNormalSpec, SpecError> {
    let mut parts = text.split(':');
    if parts.next() != Some("lognormal") {
        return Err(spec_error(
            key,
            format!("{text:?}: only lognormal:median=<duration>:sigma=<number> is supported"),
        ));
    }
    let mut spec = LogNormalSpec {
        median_seconds: 0.0,
        sigma: -1.0,
    };
    for part in parts {
        match part.split_once('=') {
            Some(("median", v)) => {
                spec.median_seconds = parse_duration(v).map_err(|e| spec_error(key, e))?;
            }
            Some(("sigma", v)) => {
                spec.sigma = v
                    .parse()
                    .map_err(|_| spec_error(key, format!("sigma {v:?} is not a number")))?;
            }
            _ => return Err(spec_error(key, format!("unknown parameter {part:?}"))),
        }
    }
    if spec.median_seconds <= 0.0 || spec.sigma < 0.0 {
        return Err(spec_error(
            key,
            "needs median > 0 and sigma >= 0, e.g. lognormal:median=90s:sigma=1.2",
        ));
    }
    Ok(spec)
}

impl std::str::FromStr for SyntheticSpec {
    type Err = SpecError;

    fn from_str(text: &str) -> Result<Self, SpecError> {
        let mut spec = SyntheticSpec::default();
        for item in text.split(',').filter(|s| !s.trim().is_empty()) {
            let (key, value) = item
                .split_once('=')
                .ok_or_else(|| spec_error(item, "expected key=value"))?;
            let (key, value) = (key.trim(), value.trim());
            let count = |v: &str| -> Result<u32, SpecError> {
                v.parse::<u32>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| spec_error(key, format!("{v:?} is not a positive integer")))
            };
            match key {
                "connectors" => spec.connectors = count(value)?,
                "test-types" => spec.test_types = count(value)?,
                "matrix" => {
                    spec.matrix = value.split('x').map(count).collect::<Result<_, _>>()?;
                }
                "durations" => spec.test = parse_lognormal(key, value)?,
                "build" => spec.build = parse_lognormal(key, value)?,
                "estimate-error" => {
                    spec.estimate_error = value
                        .parse()
                        .ok()
                        .filter(|e: &f64| *e >= 0.0)
                        .ok_or_else(|| {
                            spec_error(key, format!("{value:?} is not a number >= 0"))
                        })?;
                }
                "cache-hits" => {
                    spec.cache_hits = value
                        .parse()
                        .ok()
                        .filter(|h: &f64| (0.0..=1.0).contains(h))
                        .ok_or_else(|| {
                            spec_error(key, format!("{value:?} is not a fraction from 0 to 1"))
                        })?;
                }
                "seed" => {
                    spec.seed = value
                        .parse()
                        .map_err(|_| spec_error(key, format!("{value:?} is not an integer")))?;
                }
                _ => {
                    return Err(spec_error(
                        key,
                        "unknown key (connectors, test-types, matrix, durations, build, estimate-error, cache-hits, seed)",
                    ));
                }
            }
        }
        Ok(spec)
    }
}

impl SyntheticSpec {
    pub fn with_seed(&self, seed: u64) -> SyntheticSpec {
        SyntheticSpec {
            seed,
            ..self.clone()
        }
    }

    /// Jobs generated: a build job per connector, and its test types at every matrix point.
    pub fn jobs(&self) -> usize {
        let points: u32 = self.matrix.iter().product();
        (self.connectors * (1 + self.test_types * points)) as usize
    }

    /// The workload this spec and its seed describe (the same seed, the same workload).
    pub fn generate(&self) -> Workload {
        let mut rng = StdRng::seed_from_u64(self.seed);
        let distribution = |s: LogNormalSpec| {
            LogNormal::new(s.median_seconds.ln(), s.sigma).unwrap_or_else(|_| {
                LogNormal::new(s.median_seconds.max(1e-3).ln(), 0.0).expect("sigma 0 is valid")
            })
        };
        let test = distribution(self.test);
        let build = distribution(self.build);
        let points: u32 = self.matrix.iter().product();
        let mut jobs = Vec::with_capacity(self.jobs());
        for c in 0..self.connectors {
            let connector = format!("source-synthetic-{c:04}");
            let built = build.sample(&mut rng);
            let provider = format!("{connector}/build");
            jobs.push(SimJob {
                id: provider.clone(),
                connector: connector.clone(),
                requires: Vec::new(),
                actual_seconds: built,
                estimate_seconds: 0.0,
                needs: None,
            });
            for t in 0..self.test_types {
                for p in 0..points {
                    jobs.push(SimJob {
                        id: format!("{connector}/test{t}[point={p}]"),
                        connector: connector.clone(),
                        requires: Vec::new(),
                        actual_seconds: test.sample(&mut rng),
                        estimate_seconds: 0.0,
                        needs: Some(Need {
                            provider: provider.clone(),
                            seconds: built,
                            estimate_seconds: built,
                        }),
                    });
                }
            }
        }
        let mut workload = Workload { jobs };
        for job in &mut workload.jobs {
            job.estimate_seconds = job.actual_seconds;
            if let Some(need) = &mut job.needs {
                need.estimate_seconds = need.seconds;
            }
        }
        workload.perturb(self.estimate_error, self.seed);
        if self.cache_hits > 0.0 {
            let mut rng = StdRng::seed_from_u64(self.seed ^ 0xcac4_e000);
            let mut hit = std::collections::BTreeMap::new();
            for job in &mut workload.jobs {
                let cached = *hit
                    .entry(job.connector.clone())
                    .or_insert_with(|| rand::RngExt::random_bool(&mut rng, self.cache_hits));
                if cached {
                    job.actual_seconds = CACHE_RESTORE_SECONDS;
                    if let Some(need) = &mut job.needs {
                        need.seconds = CACHE_RESTORE_SECONDS;
                    }
                }
            }
        }
        workload
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_issue_s_workload_parses_and_generates_deterministically() {
        let spec: SyntheticSpec = "connectors=600,test-types=6,matrix=3x2,durations=lognormal:median=90s:sigma=1.2,estimate-error=0.3,seed=7"
            .parse()
            .unwrap();
        // 600 build jobs and 21,600 test jobs.
        assert_eq!(spec.jobs(), 22_200);
        let a = spec.generate();
        let b = spec.generate();
        assert_eq!(a, b);
        assert_eq!(a.jobs.len(), 22_200);
        let mut tests: Vec<f64> = a
            .jobs
            .iter()
            .filter(|j| j.needs.is_some())
            .map(|j| j.actual_seconds)
            .collect();
        tests.sort_by(f64::total_cmp);
        let median = tests[tests.len() / 2];
        assert!((80.0..100.0).contains(&median), "{median}");
        let mut own: Vec<f64> = a
            .jobs
            .iter()
            .filter(|j| j.needs.is_some())
            .map(SimJob::with_own_build_seconds)
            .collect();
        own.sort_by(f64::total_cmp);
        // build (median 30 s) + test (median 90 s): the sum's median lies between 90 and 150.
        let median = own[own.len() / 2];
        assert!((90.0..150.0).contains(&median), "{median}");
        // Every test job needs its connector's build job, which comes first.
        for (i, job) in a.jobs.iter().enumerate() {
            if let Some(need) = &job.needs {
                let provider = a.jobs[..i].iter().find(|p| p.id == need.provider);
                assert_eq!(provider.map(|p| p.actual_seconds), Some(need.seconds));
            }
        }
        let unique = a.total_seconds();
        assert!(a.total_with_own_builds_seconds() > unique * 1.1);
        let off = a
            .jobs
            .iter()
            .filter(|j| (j.estimate_seconds / j.actual_seconds - 1.0).abs() > 0.05)
            .count();
        assert!(off > a.jobs.len() / 2, "estimates are wrong: {off}");
        assert_ne!(spec.with_seed(8).generate(), a);
    }

    #[test]
    fn cache_hits_make_unchanged_connectors_cheap_but_not_their_estimates() {
        let spec: SyntheticSpec =
            "connectors=100,test-types=2,matrix=2,estimate-error=0,cache-hits=0.5"
                .parse()
                .unwrap();
        let cold = SyntheticSpec {
            cache_hits: 0.0,
            ..spec.clone()
        }
        .generate();
        let warm = spec.generate();
        let cached: std::collections::BTreeSet<&str> = warm
            .jobs
            .iter()
            .filter(|j| j.actual_seconds == CACHE_RESTORE_SECONDS)
            .map(|j| j.connector.as_str())
            .collect();
        assert!((30..70).contains(&cached.len()), "{}", cached.len());
        // A connector is cached whole, and the planner still expects the cold durations.
        for (w, c) in warm.jobs.iter().zip(&cold.jobs) {
            assert_eq!(w.estimate_seconds, c.estimate_seconds);
            if cached.contains(w.connector.as_str()) {
                assert_eq!(w.actual_seconds, CACHE_RESTORE_SECONDS);
                if let Some(need) = &w.needs {
                    assert_eq!(
                        need.seconds, CACHE_RESTORE_SECONDS,
                        "its build is cached too"
                    );
                }
            } else {
                assert_eq!(w.actual_seconds, c.actual_seconds);
            }
        }
        assert!(warm.total_seconds() < cold.total_seconds() * 0.7);
    }

    #[test]
    fn bad_specs_name_the_key() {
        for (text, key) in [
            ("connectors=0", "connectors"),
            ("matrix=3xq", "matrix"),
            ("durations=normal:median=1s", "durations"),
            ("durations=lognormal:median=soon:sigma=1", "durations"),
            ("colour=blue", "colour"),
            ("estimate-error=-1", "estimate-error"),
            ("cache-hits=1.5", "cache-hits"),
        ] {
            let err = text.parse::<SyntheticSpec>().unwrap_err();
            assert_eq!(err.key, key, "{text}: {err}");
        }
    }
}
