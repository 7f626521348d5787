//! Running the loaded programs on test frames (BPF_PROG_TEST_RUN): the
//! kernel's own answer, for tests and benchmarks.

use aya::programs::{SocketFilter, TestRun as _, TestRunOptions};
use ip_masq_common::{PROGRAM_XT_BPF_V4, PROGRAM_XT_BPF_V6};

use super::{Datapath, DatapathError};

/// `sizeof(struct __sk_buff)` on this kernel generation, and where `mark` sits in it.
const SK_BUFF_SIZE: usize = 192;
const SK_BUFF_MARK_OFFSET: usize = 8;

/// What the classifier did to one test frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Probe {
    /// The program's verdict; the classifier always answers `TC_ACT_UNSPEC` (-1).
    pub return_value: i32,
    /// `skb->mark` after the program ran.
    pub mark: u32,
}

impl Datapath {
    /// Runs the loaded classifier on `frame` with `skb->mark` preset to
    /// `mark_in` (BPF_PROG_TEST_RUN) and returns what it did. This asks the
    /// kernel program itself, not a re-implementation of its lookup.
    ///
    /// # Errors
    /// Fails when the kernel refuses the test run.
    pub fn probe(&mut self, frame: &[u8], mark_in: u32) -> Result<Probe, DatapathError> {
        let mut context = [0u8; SK_BUFF_SIZE];
        context[SK_BUFF_MARK_OFFSET..SK_BUFF_MARK_OFFSET + 4]
            .copy_from_slice(&mark_in.to_ne_bytes());
        let mut context_out = [0u8; SK_BUFF_SIZE];
        let result = self.program()?.test_run(TestRunOptions {
            data_in: Some(frame),
            ctx_in: Some(&context),
            ctx_out: Some(&mut context_out),
            repeat: 1,
            ..TestRunOptions::default()
        })?;
        let mark = u32::from_ne_bytes(
            context_out[SK_BUFF_MARK_OFFSET..SK_BUFF_MARK_OFFSET + 4]
                .try_into()
                .expect("four bytes"),
        );
        Ok(Probe {
            return_value: result.return_value as i32,
            mark,
        })
    }

    /// Runs the loaded xt_bpf socket filter of `family` on the Ethernet
    /// `frame` through BPF_PROG_TEST_RUN and returns its answer: non-zero is
    /// a match, "keep source". The kernel hands a socket filter the frame
    /// from the IP header on, as xt_bpf does.
    ///
    /// # Errors
    /// Fails when the kernel refuses the test run.
    pub fn probe_xt_bpf(
        &mut self,
        family: crate::model::Family,
        frame: &[u8],
    ) -> Result<u32, DatapathError> {
        let name = match family {
            crate::model::Family::V4 => PROGRAM_XT_BPF_V4,
            crate::model::Family::V6 => PROGRAM_XT_BPF_V6,
        };
        let program: &mut SocketFilter = self
            .ebpf
            .program_mut(name)
            .ok_or(DatapathError::Missing(name))?
            .try_into()?;
        let result = program.test_run(TestRunOptions {
            data_in: Some(frame),
            repeat: 1,
            ..TestRunOptions::default()
        })?;
        Ok(result.return_value)
    }
}
