//! `ip-masq status`: what is installed on this node, read back from the
//! kernel (pins, tcx, iptables) and from the agent's state file.
//!
//! `document` gathers, `rules` judges each family's rules (pure), and
//! `render` prints the document for people or as JSON.

mod document;
mod render;
mod rules;

use crate::commands::installed::{InspectError, Installed, Report};
use crate::options::InstalledOptions;

/// `ip-masq status`.
///
/// # Errors
/// Fails when the state file is unreadable or the node cannot be queried
/// at all; missing pieces are problems in the report, not errors.
pub fn run(args: &InstalledOptions) -> Result<Report, InspectError> {
    let installed = Installed::resolve(args)?;
    let mut document = document::gather(&installed)?;
    // What doctor calls a defeat (another masquerade, a mark conflict, a
    // foreign program) fails status too, pointing to doctor for the fix.
    if let Ok(inputs) = crate::commands::doctor::gather(&installed) {
        let findings = crate::commands::doctor::analyze(&inputs);
        document
            .problems
            .extend(crate::commands::doctor::defeats(&findings));
    }
    let output = if args.json {
        render::json(&document)
    } else {
        render::render(&document, &installed.chain)
    };
    Ok(Report {
        output,
        problems: document.problems.len(),
    })
}
