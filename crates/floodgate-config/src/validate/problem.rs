//! What a validation rule reports: the field at fault and what is wrong with it. The
//! loader turns each into a located [`crate::ConfigError`] (file, line, column).

use crate::error::FieldPath;

/// A rule's finding: the field path at fault and the message.
pub(crate) type Problem = (FieldPath, String);
