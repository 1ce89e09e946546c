//! Which machine instance this is, so that what belongs to one instance (the
//! seed, the node's key) is not carried by an image to the next.
//!
//! cloud-init's instance id when cloud-init ran, else the firmware's
//! product UUID (unique per virtual machine on EC2 and most clouds), else
//! systemd's machine id. `None` when none is known (a relocated test node):
//! then nothing is tied to an instance.

use std::fs;

use crate::paths::Node;

/// This instance's id, read below the node's root.
pub fn id(node: &Node) -> Option<String> {
    let root = node.root();
    [
        "var/lib/cloud/data/instance-id",
        "sys/class/dmi/id/product_uuid",
        "etc/machine-id",
    ]
    .iter()
    .filter_map(|path| fs::read_to_string(root.join(path)).ok())
    .map(|text| text.trim().to_owned())
    .find(|id| is_id(id))
}

/// An id is one short line of printable ASCII (it is written to files and
/// printed): anything else is ignored.
fn is_id(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 128
        && text.chars().all(|c| c.is_ascii_graphic() && c != '/')
        && text != "uninitialized"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert!(is_id("i-0abc123"));
        assert!(is_id("ec2f0a3c-1d2e-4f56-8a9b-0c1d2e3f4a5b"));
        for bad in ["", "uninitialized", "a b", "../x", &"x".repeat(200)] {
            assert!(!is_id(bad), "{bad}");
        }
    }
}
