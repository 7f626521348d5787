//! The one place that calls libyaml: `unsafe-libyaml`, the C library
//! transpiled to Rust, which go-yaml v2 was ported from too. Its parser
//! reads to a NUL-terminated buffer of its own, as the C code does, so
//! every input is handled the way libyaml and go-yaml handle it.
//!
//! All `unsafe` of the crate is here: a parser in a box that never moves,
//! one event at a time copied into owned values and freed at once.

use std::{ffi::CStr, marker::PhantomData, mem::MaybeUninit, ptr::NonNull};

use unsafe_libyaml as unsafe_yaml;

/// One parse event, owned.
#[derive(Debug)]
pub(super) enum Event {
    StreamStart,
    StreamEnd,
    DocumentStart {
        /// The `%YAML` directive's (major, minor), if any.
        version: Option<(i32, i32)>,
    },
    DocumentEnd,
    Alias {
        anchor: String,
    },
    Scalar {
        anchor: Option<String>,
        tag: Option<String>,
        value: String,
        /// libyaml's `plain_implicit`: untagged (or `!`) and plain.
        plain_implicit: bool,
        plain: bool,
    },
    SequenceStart {
        anchor: Option<String>,
        flow: bool,
    },
    SequenceEnd,
    MappingStart {
        anchor: Option<String>,
        flow: bool,
    },
    MappingEnd,
}

/// A libyaml parser over borrowed input.
pub(super) struct Events<'input> {
    /// Boxed so that it never moves: libyaml keeps pointers into itself.
    parser: Box<MaybeUninit<unsafe_yaml::yaml_parser_t>>,
    _input: PhantomData<&'input [u8]>,
}

impl<'input> Events<'input> {
    pub(super) fn new(input: &'input [u8]) -> Self {
        let mut parser = Box::new(MaybeUninit::<unsafe_yaml::yaml_parser_t>::uninit());
        let raw = parser.as_mut_ptr();
        // SAFETY: `raw` points to writable, boxed (so pinned) memory of the
        // right size; yaml_parser_initialize fills all of it. It fails only
        // when an allocation fails, which aborts in Rust anyway.
        let initialized = unsafe { unsafe_yaml::yaml_parser_initialize(raw) };
        assert!(initialized.ok, "libyaml could not allocate its parser");
        // SAFETY: the parser is initialized; the input outlives it through
        // the 'input borrow held in PhantomData, and libyaml only reads it.
        // The encoding is left to libyaml's detection (a UTF-16 byte-order
        // mark, else UTF-8, a UTF-8 mark skipped), as go-yaml's.
        unsafe {
            unsafe_yaml::yaml_parser_set_input_string(raw, input.as_ptr(), input.len() as u64);
        }
        Self {
            parser,
            _input: PhantomData,
        }
    }

    /// The next event, or libyaml's error with its position.
    pub(super) fn next_event(&mut self) -> Result<Event, String> {
        let parser = self.parser.as_mut_ptr();
        let mut event = MaybeUninit::<unsafe_yaml::yaml_event_t>::uninit();
        // SAFETY: the parser was initialized in `new` and is only used from
        // here; `event` is writable memory that yaml_parser_parse fills on
        // success. After an error the parser stays in its error state, which
        // we check first, as libyaml requires.
        unsafe {
            if (&*parser).error != unsafe_yaml::YAML_NO_ERROR {
                return Err(error_message(parser));
            }
            if unsafe_yaml::yaml_parser_parse(parser, event.as_mut_ptr()).fail {
                return Err(error_message(parser));
            }
            let event = event.as_mut_ptr();
            let owned = convert(&*event);
            unsafe_yaml::yaml_event_delete(event);
            Ok(owned)
        }
    }
}

impl Drop for Events<'_> {
    fn drop(&mut self) {
        // SAFETY: initialized in `new`, deleted exactly once, here.
        unsafe { unsafe_yaml::yaml_parser_delete(self.parser.as_mut_ptr()) }
    }
}

/// Copies a NUL-terminated libyaml string, `None` for a null pointer.
///
/// # Safety
/// `text` is null or points to a NUL-terminated string that lives while
/// this runs.
unsafe fn owned_text(text: *const u8) -> Option<String> {
    let text = NonNull::new(text.cast_mut())?;
    // SAFETY: as the caller promises.
    let text = unsafe { CStr::from_ptr(text.as_ptr().cast()) };
    Some(String::from_utf8_lossy(text.to_bytes()).into_owned())
}

/// # Safety
/// `event` was filled by a successful yaml_parser_parse and not deleted.
unsafe fn convert(event: &unsafe_yaml::yaml_event_t) -> Event {
    // SAFETY: every union field read below is the one libyaml filled for
    // this event type; the strings are owned by the event, which lives
    // until the caller deletes it after this returns.
    unsafe {
        match event.type_ {
            unsafe_yaml::YAML_STREAM_START_EVENT => Event::StreamStart,
            unsafe_yaml::YAML_DOCUMENT_START_EVENT => {
                let version = event.data.document_start.version_directive;
                Event::DocumentStart {
                    version: (!version.is_null()).then(|| ((*version).major, (*version).minor)),
                }
            }
            unsafe_yaml::YAML_DOCUMENT_END_EVENT => Event::DocumentEnd,
            unsafe_yaml::YAML_ALIAS_EVENT => Event::Alias {
                anchor: owned_text(event.data.alias.anchor).unwrap_or_default(),
            },
            unsafe_yaml::YAML_SCALAR_EVENT => {
                let scalar = &event.data.scalar;
                let value = std::slice::from_raw_parts(scalar.value, scalar.length as usize);
                Event::Scalar {
                    anchor: owned_text(scalar.anchor),
                    tag: owned_text(scalar.tag),
                    value: String::from_utf8_lossy(value).into_owned(),
                    plain_implicit: scalar.plain_implicit,
                    plain: scalar.style == unsafe_yaml::YAML_PLAIN_SCALAR_STYLE,
                }
            }
            unsafe_yaml::YAML_SEQUENCE_START_EVENT => Event::SequenceStart {
                anchor: owned_text(event.data.sequence_start.anchor),
                flow: event.data.sequence_start.style == unsafe_yaml::YAML_FLOW_SEQUENCE_STYLE,
            },
            unsafe_yaml::YAML_SEQUENCE_END_EVENT => Event::SequenceEnd,
            unsafe_yaml::YAML_MAPPING_START_EVENT => Event::MappingStart {
                anchor: owned_text(event.data.mapping_start.anchor),
                flow: event.data.mapping_start.style == unsafe_yaml::YAML_FLOW_MAPPING_STYLE,
            },
            unsafe_yaml::YAML_MAPPING_END_EVENT => Event::MappingEnd,
            // The stream's end, and (never seen) a success with no event,
            // which ending the stream reads safely.
            _ => Event::StreamEnd,
        }
    }
}

/// libyaml's error as text: the problem, where, and the context it was in.
///
/// # Safety
/// `parser` is initialized and in an error state.
unsafe fn error_message(parser: *const unsafe_yaml::yaml_parser_t) -> String {
    // SAFETY: as the caller promises; problem and context are static C
    // strings or null.
    unsafe {
        let parser = &*parser;
        let problem = owned_text(parser.problem.cast()).unwrap_or_else(|| "unknown error".into());
        let mut message = format!(
            "{problem} at line {} column {}",
            parser.problem_mark.line + 1,
            parser.problem_mark.column + 1
        );
        if let Some(context) = owned_text(parser.context.cast()) {
            message.push_str(&format!(
                ", {context} at line {} column {}",
                parser.context_mark.line + 1,
                parser.context_mark.column + 1
            ));
        }
        message
    }
}
