//! Event sources: changes to the config file (inotify on its directory),
//! interfaces that appear or go away and default routes that change
//! (rtnetlink link and route notifications).

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
};

use futures::{Stream, StreamExt as _};
use inotify::{EventMask, Inotify, WatchMask};
use netlink_packet_core::NetlinkPayload;
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{AsyncSocket as _, SocketAddr};
use thiserror::Error;
use tokio::sync::mpsc;

use crate::kernel::netlink::{Interface, is_default_route};

/// Errors setting up a watch.
#[derive(Debug, Error)]
pub enum WatchError {
    #[error("cannot watch {path} for changes")]
    Inotify {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot subscribe to rtnetlink link and route events")]
    Netlink(#[source] std::io::Error),
}

/// What the config watch reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigEvent {
    /// Something changed that could affect the file.
    Changed,
    /// The watch stopped, and nothing more comes from it: it must be set
    /// up again, and the file re-read for what it missed.
    Lost { reason: String },
}

/// Watches the directory holding the config file, because Kubernetes
/// updates a ConfigMap volume by swapping the `..data` symlink, which never
/// touches the file's own inode. Sends [`ConfigEvent::Changed`] for every
/// change that could affect the file (the receiver coalesces bursts), and
/// [`ConfigEvent::Lost`] as its last word when the watch stops: a read
/// error, or the directory itself removed or moved away (a watch follows
/// the inode, not the path, so it would see nothing of a directory put in
/// its place).
///
/// # Errors
/// Fails when the directory cannot be watched (for example, it does not exist).
pub fn config_changes(config: &Path, changes: mpsc::Sender<ConfigEvent>) -> Result<(), WatchError> {
    let directory = config
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_owned();
    let inotify = Inotify::init().map_err(|source| WatchError::Inotify {
        path: directory.clone(),
        source,
    })?;
    inotify
        .watches()
        .add(
            &directory,
            WatchMask::CREATE
                | WatchMask::CLOSE_WRITE
                | WatchMask::MOVED_TO
                | WatchMask::MOVED_FROM
                | WatchMask::DELETE
                | WatchMask::ATTRIB
                | WatchMask::DELETE_SELF
                | WatchMask::MOVE_SELF,
        )
        .map_err(|source| WatchError::Inotify {
            path: directory.clone(),
            source,
        })?;
    let events = inotify
        .into_event_stream([0u8; 4096])
        .map_err(|source| WatchError::Inotify {
            path: directory.clone(),
            source,
        })?
        .map(|event| {
            event.map(|event| Event {
                mask: event.mask,
                name: event.name,
            })
        });
    let file_name: Option<OsString> = config.file_name().map(ToOwned::to_owned);
    tokio::spawn(forward(events, directory, file_name, changes));
    Ok(())
}

/// One inotify event, as much of it as [`forward`] looks at.
#[derive(Clone, Debug)]
struct Event {
    mask: EventMask,
    name: Option<OsString>,
}

/// Turns the directory's events into [`ConfigEvent`]s until the watch
/// stops, then reports why. Apart from inotify, so that a failing stream
/// can be tested.
async fn forward(
    mut events: impl Stream<Item = std::io::Result<Event>> + Unpin,
    directory: PathBuf,
    file_name: Option<OsString>,
    changes: mpsc::Sender<ConfigEvent>,
) {
    let reason = loop {
        let event = match events.next().await {
            None => break "the inotify event stream ended".to_owned(),
            Some(Err(err)) => break format!("cannot read inotify events: {err}"),
            Some(Ok(event)) => event,
        };
        if event
            .mask
            .intersects(EventMask::DELETE_SELF | EventMask::MOVE_SELF | EventMask::IGNORED)
        {
            break format!("{} was removed or moved", directory.display());
        }
        // Our file, the `..data` swap, or the directory itself (an
        // overflowed queue, say). A regular file that is created is still
        // empty: its CLOSE_WRITE, when the writer is done, is the event to
        // act on; a created symlink is complete at once.
        let relevant = match &event.name {
            None => true,
            // Our file, or another `ip-masq*` file that `--config-dir`
            // merges with it.
            Some(name)
                if Some(name) == file_name.as_ref()
                    || name.to_string_lossy().starts_with("ip-masq") =>
            {
                !event.mask.contains(EventMask::CREATE)
                    || std::fs::symlink_metadata(directory.join(name))
                        .is_ok_and(|meta| meta.file_type().is_symlink())
            }
            Some(name) => name.to_string_lossy().starts_with(".."),
        };
        if relevant && changes.send(ConfigEvent::Changed).await.is_err() {
            // The agent is gone: nobody to tell.
            return;
        }
    };
    let _ = changes.send(ConfigEvent::Lost { reason }).await;
}

/// A change to the set of interfaces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkEvent {
    /// An interface appeared or changed (name, state).
    Changed(Interface),
    /// An interface was deleted.
    Removed { index: u32 },
    /// A default route was added or removed: which interface is the uplink
    /// may have changed.
    DefaultRouteChanged,
}

/// Subscribes to rtnetlink link and route notifications (only default
/// routes are reported). Subscribe before listing interfaces, so that none
/// created in between is missed.
///
/// # Errors
/// Fails when the netlink socket cannot be opened or bound.
pub fn link_events(events: mpsc::Sender<LinkEvent>) -> Result<(), WatchError> {
    let (mut connection, _handle, mut messages) =
        rtnetlink::new_connection().map_err(WatchError::Netlink)?;
    let groups = rtnetlink::constants::RTMGRP_LINK
        | rtnetlink::constants::RTMGRP_IPV4_ROUTE
        | rtnetlink::constants::RTMGRP_IPV6_ROUTE;
    connection
        .socket_mut()
        .socket_mut()
        .bind(&SocketAddr::new(0, groups))
        .map_err(WatchError::Netlink)?;
    tokio::spawn(connection);
    tokio::spawn(async move {
        while let Some((message, _)) = messages.next().await {
            let event = match message.payload {
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link)) => {
                    Interface::from_message(&link).map(LinkEvent::Changed)
                }
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(link)) => {
                    Some(LinkEvent::Removed {
                        index: link.header.index,
                    })
                }
                // Pod routes come and go with every pod: only a default
                // route can change the uplink.
                NetlinkPayload::InnerMessage(
                    RouteNetlinkMessage::NewRoute(route) | RouteNetlinkMessage::DelRoute(route),
                ) if is_default_route(&route) => Some(LinkEvent::DefaultRouteChanged),
                _ => None,
            };
            if let Some(event) = event
                && events.send(event).await.is_err()
            {
                break;
            }
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(mask: EventMask, name: Option<&str>) -> std::io::Result<Event> {
        Ok(Event {
            mask,
            name: name.map(OsString::from),
        })
    }

    /// Runs [`forward`] over `events` and returns what it reported.
    async fn reported(events: Vec<std::io::Result<Event>>) -> Vec<ConfigEvent> {
        let (tx, mut rx) = mpsc::channel(16);
        forward(
            futures::stream::iter(events),
            PathBuf::from("/etc/config"),
            Some(OsString::from("ip-masq-agent")),
            tx,
        )
        .await;
        let mut seen = Vec::new();
        while let Ok(event) = rx.try_recv() {
            seen.push(event);
        }
        seen
    }

    #[tokio::test]
    async fn relevant_events_are_changes_and_others_are_dropped() {
        let seen = reported(vec![
            event(EventMask::CLOSE_WRITE, Some("ip-masq-agent")),
            event(EventMask::CLOSE_WRITE, Some("unrelated")),
            event(EventMask::MOVED_TO, Some("..data")),
        ])
        .await;
        assert_eq!(
            seen,
            [
                ConfigEvent::Changed,
                ConfigEvent::Changed,
                ConfigEvent::Lost {
                    reason: "the inotify event stream ended".into()
                }
            ]
        );
    }

    #[tokio::test]
    async fn a_read_error_ends_the_watch_and_says_so() {
        let seen = reported(vec![
            event(EventMask::CLOSE_WRITE, Some("ip-masq-agent")),
            Err(std::io::Error::from_raw_os_error(libc::EIO)),
            // Never read: the watch is over.
            event(EventMask::CLOSE_WRITE, Some("ip-masq-agent")),
        ])
        .await;
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert_eq!(seen[0], ConfigEvent::Changed);
        let ConfigEvent::Lost { reason } = &seen[1] else {
            panic!("not lost: {seen:?}");
        };
        assert!(reason.starts_with("cannot read inotify events"), "{reason}");
    }

    #[tokio::test]
    async fn a_removed_or_moved_directory_ends_the_watch() {
        for mask in [
            EventMask::DELETE_SELF,
            EventMask::MOVE_SELF,
            EventMask::IGNORED,
        ] {
            let seen = reported(vec![
                event(mask, None),
                event(EventMask::CLOSE_WRITE, Some("ip-masq-agent")),
            ])
            .await;
            assert_eq!(
                seen,
                [ConfigEvent::Lost {
                    reason: "/etc/config was removed or moved".into()
                }],
                "{mask:?}"
            );
        }
    }
}
