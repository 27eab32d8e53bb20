//! Sharing views of the masters through ZooKeeper (see `broker/views.rs`).
//!
//! Each daemon keeps its latest view in an ephemeral znode of its own,
//! `<zk_path>/views/<its HTTP address>`, and reads the others' whenever it writes its
//! own. One thread does both, one ZooKeeper round of calls per view the monitor shares
//! (once a check interval); a view whose number stops changing is not renewed, so a dead
//! or cut-off daemon's view stops counting soon, before its session even expires.

use super::Shared;
use crate::broker::views::MastersView;
use crossbeam_channel::Receiver;
use zookeeper::{Acl, CreateMode, ZkError, ZooKeeper};

/// Writes this daemon's views as they come and reads the others'; returns when the
/// channel closes.
pub fn run(shared: &Shared, views: Receiver<MastersView>) {
    while let Ok(mut view) = views.recv() {
        // Only the latest view matters.
        while let Ok(newer) = views.try_recv() {
            view = newer;
        }
        if shared.stopping.is_triggered() {
            return;
        }
        let Some((client, _)) = shared.client() else {
            continue;
        };
        let base = shared.options.views_path();
        let acl = shared.guard.for_new_znodes();
        let mine = format!("{base}/{}", view.daemon);
        let data = view.to_bytes();
        let round = client.call(shared.options.call_timeout(), move |zk| {
            exchange(zk, &base, &mine, data, acl)
        });
        match round {
            Ok(others) => {
                // A view counts for the znode it was read from, whatever it says.
                for (znode, bytes) in others {
                    match MastersView::from_bytes(&bytes) {
                        Ok(other) => shared.views.record(&znode, other),
                        Err(e) => log::debug!("zk: a peer's view: {e}"),
                    }
                }
            }
            Err(e) => log::debug!("zk: cannot share this daemon's view: {e}"),
        }
    }
}

/// Writes `data` to `mine` (creating it, and its parent, when missing) and reads every
/// other view under `base`, with the name of its znode.
fn exchange(
    zk: &ZooKeeper,
    base: &str,
    mine: &str,
    data: Vec<u8>,
    acl: Vec<Acl>,
) -> zookeeper::ZkResult<Vec<(String, Vec<u8>)>> {
    match zk.set_data(mine, data.clone(), None) {
        Ok(_) => {}
        Err(ZkError::NoNode) => {
            match zk.create(base, Vec::new(), acl.clone(), CreateMode::Persistent) {
                Ok(_) | Err(ZkError::NodeExists) => {}
                Err(e) => return Err(e),
            }
            match zk.create(mine, data, acl, CreateMode::Ephemeral) {
                Ok(_) | Err(ZkError::NodeExists) => {}
                Err(e) => return Err(e),
            }
        }
        Err(e) => return Err(e),
    }
    let mut others = Vec::new();
    for child in zk.get_children(base, false)? {
        let path = format!("{base}/{child}");
        if path == mine {
            continue;
        }
        // A daemon that left between the listing and the read is simply not counted.
        if let Ok((bytes, _)) = zk.get_data(&path, false) {
            others.push((child, bytes));
        }
    }
    Ok(others)
}
