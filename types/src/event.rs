//! What started a run, which matrix points it runs, and how a file changed.

string_enum! {
    /// What started a run.
    pub enum Event {
        /// A pull (merge) request: selective.
        PullRequest => "pull_request",
        /// A push to a branch: full on the default branch.
        Push => "push",
        /// A cron schedule: full.
        Schedule => "schedule",
        /// A person asked.
        Manual => "manual",
    }
}

string_enum! {
    /// Which matrix points run.
    pub enum Versions {
        /// Each axis at its default value.
        Default => "default",
        /// Every axis expanded (cross product or zipped, per axis).
        All => "all",
        /// Each axis at its latest value.
        Latest => "latest",
    }
}

string_enum! {
    /// How git says a path changed between two trees (or that it is untracked).
    pub enum ChangeStatus {
        /// New in head.
        Added => "added",
        /// Changed content.
        Modified => "modified",
        /// Gone in head.
        Deleted => "deleted",
        /// Moved (its old path is kept beside it).
        Renamed => "renamed",
        /// Copied from another path.
        Copied => "copied",
        /// A file became a link or the other way round.
        TypeChanged => "type_changed",
        /// Not known to git (local runs only).
        Untracked => "untracked",
    }
}

impl ChangeStatus {
    /// git's one-letter form (`git diff --name-status`), `?` for untracked.
    pub fn letter(self) -> char {
        match self {
            ChangeStatus::Added => 'A',
            ChangeStatus::Modified => 'M',
            ChangeStatus::Deleted => 'D',
            ChangeStatus::Renamed => 'R',
            ChangeStatus::Copied => 'C',
            ChangeStatus::TypeChanged => 'T',
            ChangeStatus::Untracked => '?',
        }
    }
}
