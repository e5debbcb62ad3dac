//! What every HelpGrid command line promises an operator: `--version`, and help text on every
//! flag. Each binary's tests call [`undocumented`] on its clap command, so a flag without help
//! (or a binary without `--version`) fails the build's tests, not a person at 3 a.m.

/// Everything `command` leaves undocumented, one line each; empty when all is well.
///
/// Checks that `--version` answers, and that every argument of the command and of its
/// subcommands has help text (clap's own `--help`/`--version` excepted).
pub fn undocumented(command: &clap::Command) -> Vec<String> {
    let mut problems = Vec::new();
    let name = command.get_name().to_owned();
    match command
        .clone()
        .try_get_matches_from([name.as_str(), "--version"])
    {
        Err(e) if e.kind() == clap::error::ErrorKind::DisplayVersion => {}
        _ => problems.push(format!("{name}: --version is not answered")),
    }
    collect(command, &name, &mut problems);
    problems
}

fn collect(command: &clap::Command, path: &str, problems: &mut Vec<String>) {
    for arg in command.get_arguments() {
        let id = arg.get_id().as_str();
        if matches!(id, "help" | "version") {
            continue;
        }
        if arg.get_help().is_none() && arg.get_long_help().is_none() {
            let shown = arg
                .get_long()
                .map_or_else(|| id.to_owned(), |long| format!("--{long}"));
            problems.push(format!("{path}: {shown} has no help text"));
        }
    }
    for sub in command.get_subcommands() {
        if sub.get_name() == "help" {
            continue;
        }
        if sub.get_about().is_none() && sub.get_long_about().is_none() {
            problems.push(format!("{path} {}: no description", sub.get_name()));
        }
        collect(sub, &format!("{path} {}", sub.get_name()), problems);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(clap::Parser)]
    #[command(name = "good", version)]
    struct Good {
        /// Documented.
        #[arg(long)]
        flag: bool,
    }

    #[derive(clap::Parser)]
    #[command(name = "bad")]
    struct Bad {
        #[arg(long)]
        silent: bool,
    }

    #[test]
    fn a_documented_command_passes_and_a_silent_flag_or_missing_version_is_named() {
        use clap::CommandFactory;
        assert_eq!(undocumented(&Good::command()), Vec::<String>::new());
        assert_eq!(
            undocumented(&Bad::command()),
            vec![
                "bad: --version is not answered".to_owned(),
                "bad: --silent has no help text".to_owned(),
            ]
        );
    }
}
