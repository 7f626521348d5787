//! Which interfaces get the classifier: new ones, ones someone detached it
//! from, and not those gone or outside the selector.

use super::*;
use crate::kernel::watch::LinkEvent;
use crate::serve::state::{AttachedInterface, not_ready_reasons};

fn bridge(index: u32, name: &str) -> Interface {
    Interface {
        index,
        name: name.into(),
        kind: Some("bridge".into()),
        ethernet: true,
        default_route: false,
    }
}

/// A veth that a default route leaves through: a container-based node's
/// uplink.
fn uplink(index: u32, name: &str) -> Interface {
    Interface {
        default_route: true,
        ..veth(index, name)
    }
}

#[test]
fn the_uplink_is_left_alone_unless_named() {
    let mut harness = Harness::new("uplink");
    harness
        .agent
        .reconcile(vec![uplink(2, "eth0"), veth(7, "veth7")])
        .unwrap();
    assert_eq!(harness.kernel().attach_calls, ["veth7"]);
    // A later event for it (an address change) knows it is the uplink.
    harness
        .agent
        .on_link_event(LinkEvent::Changed(veth(2, "eth0")));
    assert_eq!(harness.kernel().attach_calls, ["veth7"]);

    let selector = Selector::parse(Some("eth0,veth*")).unwrap();
    let mut harness = Harness::with("uplink-named", FakeKernel::default(), selector);
    harness
        .agent
        .reconcile(vec![uplink(2, "eth0"), veth(7, "veth7")])
        .unwrap();
    assert_eq!(harness.kernel().attach_calls, ["eth0", "veth7"]);
}

#[test]
fn a_veth_that_becomes_the_uplink_is_detached() {
    let mut harness = Harness::new("becomes-uplink");
    harness
        .agent
        .reconcile(vec![veth(2, "eth0"), veth(7, "veth7")])
        .unwrap();
    assert!(harness.kernel().link_pins.contains(&2));
    // The default route moved to eth0.
    harness
        .agent
        .reconcile(vec![uplink(2, "eth0"), veth(7, "veth7")])
        .unwrap();
    assert!(!harness.kernel().link_pins.contains(&2));
    assert!(harness.kernel().link_pins.contains(&7));
    assert!(!harness.agent.attached.contains_key(&2));
    harness.agent.publish();
    assert_eq!(
        harness.status().attached,
        [AttachedInterface {
            name: "veth7".into(),
            ifindex: 7
        }]
    );
    // Moved away again: attached again.
    harness
        .agent
        .reconcile(vec![veth(2, "eth0"), veth(7, "veth7")])
        .unwrap();
    assert!(harness.kernel().link_pins.contains(&2));
}

#[test]
fn a_link_left_on_an_interface_no_longer_selected_is_removed() {
    // An earlier run with `--interfaces 'veth*,cni0'` left a link on cni0.
    let mut kernel = FakeKernel::default();
    kernel.link_pins.extend([3, 7]);
    kernel
        .carrying
        .extend(["cni0".to_owned(), "veth7".to_owned()]);
    let mut harness = Harness::with("narrowed", kernel, Selector::AllVeth);
    harness
        .agent
        .reconcile(vec![bridge(3, "cni0"), veth(7, "veth7")])
        .unwrap();
    assert_eq!(
        harness
            .kernel()
            .link_pins
            .iter()
            .copied()
            .collect::<Vec<_>>(),
        [7]
    );
    assert_eq!(harness.kernel().attach_calls, ["veth7"]);
}

#[test]
fn a_new_veth_gets_the_classifier() {
    let mut harness = Harness::new("new-veth");
    harness
        .agent
        .on_link_event(LinkEvent::Changed(veth(7, "veth7")));
    assert!(harness.kernel().carrying.contains("veth7"));
    assert!(harness.kernel().link_pins.contains(&7));
    harness.agent.publish();
    assert_eq!(
        harness.status().attached,
        [AttachedInterface {
            name: "veth7".into(),
            ifindex: 7
        }]
    );
    // A later event for the same interface (an address, a state change)
    // attaches nothing again.
    harness
        .agent
        .on_link_event(LinkEvent::Changed(veth(7, "veth7")));
    assert_eq!(harness.kernel().attach_calls, ["veth7"]);
}

#[test]
fn interfaces_outside_the_selector_are_left_alone() {
    let mut harness = Harness::new("not-selected");
    harness
        .agent
        .on_link_event(LinkEvent::Changed(bridge(3, "cni0")));
    let mut not_ethernet = veth(4, "veth4");
    not_ethernet.ethernet = false;
    harness
        .agent
        .on_link_event(LinkEvent::Changed(not_ethernet.clone()));
    harness
        .agent
        .reconcile(vec![bridge(3, "cni0"), not_ethernet])
        .unwrap();
    assert!(harness.kernel().attach_calls.is_empty());
    assert!(harness.agent.attached.is_empty());

    // With `--interfaces cali*`, a veth of another name stays bare too.
    let selector = Selector::parse(Some("cali*")).unwrap();
    let mut harness = Harness::with("by-name", FakeKernel::default(), selector);
    harness
        .agent
        .reconcile(vec![veth(5, "veth5"), veth(6, "cali6")])
        .unwrap();
    assert_eq!(harness.kernel().attach_calls, ["cali6"]);
}

#[test]
fn a_deleted_interface_is_forgotten() {
    let mut harness = Harness::new("deleted");
    harness.agent.reconcile(vec![veth(7, "veth7")]).unwrap();
    assert!(harness.agent.attached.contains_key(&7));
    harness.agent.on_link_event(LinkEvent::Removed { index: 7 });
    assert!(harness.agent.attached.is_empty());
    assert!(!harness.kernel().link_pins.contains(&7));
    harness.agent.publish();
    assert!(harness.status().attached.is_empty());
}

#[test]
fn pins_of_interfaces_gone_while_the_agent_was_down_are_dropped() {
    let mut kernel = FakeKernel::default();
    kernel.link_pins.extend([5, 7]);
    let mut harness = Harness::with("gone-pins", kernel, Selector::AllVeth);
    harness.agent.reconcile(vec![veth(7, "veth7")]).unwrap();
    assert_eq!(
        harness
            .kernel()
            .link_pins
            .iter()
            .copied()
            .collect::<Vec<_>>(),
        [7]
    );
    assert!(harness.agent.attached.contains_key(&7));
}

#[test]
fn a_link_left_by_an_earlier_run_is_adopted_without_counting_a_repair() {
    let mut kernel = FakeKernel::default();
    kernel.link_pins.insert(7);
    kernel.carrying.insert("veth7".into());
    let mut harness = Harness::with("adopted", kernel, Selector::AllVeth);
    harness.agent.reconcile(vec![veth(7, "veth7")]).unwrap();
    assert_eq!(harness.kernel().attach_calls, ["veth7"]);
    assert!(harness.agent.attached.contains_key(&7));
    assert_eq!(harness.status().repairs.link, 0);
}

#[test]
fn a_classifier_someone_detached_is_attached_again_and_counted() {
    let mut harness = Harness::new("detached");
    harness.agent.reconcile(vec![veth(7, "veth7")]).unwrap();
    // In place: a resync asks the kernel, and attaches nothing.
    harness.agent.reconcile(vec![veth(7, "veth7")]).unwrap();
    assert_eq!(harness.kernel().attach_calls, ["veth7"]);
    assert_eq!(harness.status().repairs.link, 0);

    harness.kernel().carrying.remove("veth7");
    harness.agent.reconcile(vec![veth(7, "veth7")]).unwrap();
    assert_eq!(harness.kernel().attach_calls, ["veth7", "veth7"]);
    assert!(harness.kernel().carrying.contains("veth7"));
    assert_eq!(harness.status().repairs.link, 1);
}

#[test]
fn an_attach_failure_is_reported_until_it_works() {
    let mut harness = Harness::new("refused");
    harness.kernel().refuses.insert("veth9".into());
    harness.agent.reconcile(vec![veth(9, "veth9")]).unwrap();
    harness.agent.finish_startup();
    let status = harness.status();
    assert_eq!(status.attach_failures.len(), 1);
    assert_eq!(status.attach_failures[0].interface, "veth9");
    assert!(harness.agent.attached.is_empty());
    let reasons = not_ready_reasons(&status, &[]);
    assert!(
        reasons
            .iter()
            .any(|r| r.starts_with("classifier not attached to veth9:")),
        "{reasons:?}"
    );
    harness.kernel().refuses.clear();
    harness.agent.reconcile(vec![veth(9, "veth9")]).unwrap();
    assert!(harness.status().attach_failures.is_empty());
    assert!(harness.agent.attached.contains_key(&9));

    // A failure of an interface that then goes away goes with it.
    harness.kernel().refuses.insert("veth10".into());
    harness
        .agent
        .on_link_event(LinkEvent::Changed(veth(10, "veth10")));
    assert_eq!(harness.status().attach_failures.len(), 1);
    harness
        .agent
        .on_link_event(LinkEvent::Removed { index: 10 });
    assert!(harness.status().attach_failures.is_empty());
}

#[test]
fn the_xt_bpf_datapath_detaches_the_classifier_everywhere() {
    let mut kernel = FakeKernel::default();
    kernel.link_pins.extend([3, 4]);
    kernel
        .carrying
        .extend(["veth3".to_owned(), "veth4".to_owned()]);
    let mut harness = Harness::with("xt-bpf", kernel, Selector::AllVeth);
    harness.agent.detach_everywhere().unwrap();
    assert!(harness.kernel().link_pins.is_empty());
    assert!(harness.kernel().carrying.is_empty());
    assert!(harness.kernel().attach_calls.is_empty());
}
