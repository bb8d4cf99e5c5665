//! See `berth_proxy::fuzzing::http_request`: the proxy must refuse or accept, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| berth_proxy::fuzzing::http_request(data));
