//! `helpgrid-archive --version` answers, and every flag has help text (the same check every
//! HelpGrid binary passes: `helpgrid_common::cli`).

use clap::CommandFactory;

#[test]
fn the_command_line_answers_version_and_every_flag_has_help() {
    assert_eq!(
        helpgrid_common::cli::undocumented(&helpgrid_archive::config::ArchiveArgs::command()),
        Vec::<String>::new()
    );
}
