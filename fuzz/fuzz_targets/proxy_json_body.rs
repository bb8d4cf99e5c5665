//! See `berth_proxy::fuzzing::json_body`: the proxy must refuse or accept, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| berth_proxy::fuzzing::json_body(data));
