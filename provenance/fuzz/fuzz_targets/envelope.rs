//! DSSE envelope, `.intoto.jsonl` and Sigstore bundle parsing of arbitrary bytes.
#![no_main]
use attest_provenance::dsse::{read_envelopes, Envelope};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(env) = Envelope::from_json(data) {
        // Whatever we accept, we write back and read back identically.
        assert_eq!(
            Envelope::from_json(env.to_json().as_bytes()).ok(),
            Some(env)
        );
    }
    let _ = read_envelopes(data);
});
