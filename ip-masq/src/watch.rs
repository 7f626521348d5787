//! Event sources: changes to the config file (inotify on its directory) and
//! interfaces that appear or go away (rtnetlink link notifications).

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
};

use futures::StreamExt as _;
use inotify::{EventMask, Inotify, WatchMask};
use netlink_packet_core::NetlinkPayload;
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{AsyncSocket as _, SocketAddr};
use thiserror::Error;
use tokio::sync::mpsc;

use crate::interfaces::Interface;

/// Errors setting up a watch.
#[derive(Debug, Error)]
pub enum WatchError {
    #[error("cannot watch {path} for changes")]
    Inotify {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot subscribe to rtnetlink link events")]
    Netlink(#[source] std::io::Error),
}

/// Watches the directory holding the config file, because Kubernetes
/// updates a ConfigMap volume by swapping the `..data` symlink, which never
/// touches the file's own inode. Sends `()` for every change that could
/// affect the file; the receiver coalesces bursts.
///
/// # Errors
/// Fails when the directory cannot be watched (for example, it does not exist).
pub fn config_changes(config: &Path, changes: mpsc::Sender<()>) -> Result<(), WatchError> {
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
    let mut events =
        inotify
            .into_event_stream([0u8; 4096])
            .map_err(|source| WatchError::Inotify {
                path: directory.clone(),
                source,
            })?;
    let file_name: Option<OsString> = config.file_name().map(ToOwned::to_owned);
    let directory_for_events = directory.clone();
    tokio::spawn(async move {
        let directory = directory_for_events;
        while let Some(event) = events.next().await {
            let Ok(event) = event else { break };
            // Our file, the `..data` swap, or the directory itself. A
            // regular file that is created is still empty: its
            // CLOSE_WRITE, when the writer is done, is the event to act on;
            // a created symlink is complete at once.
            let relevant = match &event.name {
                None => true,
                Some(name) if Some(name) == file_name.as_ref() => {
                    !event.mask.contains(EventMask::CREATE)
                        || std::fs::symlink_metadata(directory.join(name))
                            .is_ok_and(|meta| meta.file_type().is_symlink())
                }
                Some(name) => name.to_string_lossy().starts_with(".."),
            };
            if relevant && changes.send(()).await.is_err() {
                break;
            }
        }
    });
    Ok(())
}

/// A change to the set of interfaces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkEvent {
    /// An interface appeared or changed (name, state).
    Changed(Interface),
    /// An interface was deleted.
    Removed { index: u32 },
}

/// Subscribes to rtnetlink link notifications. Subscribe before listing
/// interfaces, so that none created in between is missed.
///
/// # Errors
/// Fails when the netlink socket cannot be opened or bound.
pub fn link_events(events: mpsc::Sender<LinkEvent>) -> Result<(), WatchError> {
    let (mut connection, _handle, mut messages) =
        rtnetlink::new_connection().map_err(WatchError::Netlink)?;
    let groups = rtnetlink::constants::RTMGRP_LINK;
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
