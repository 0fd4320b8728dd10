//! The router's front door reading a request head (its own HTTP/1.1 loop, which serves
//! inference requests before hyper sees them): any bytes give an answer, never a panic; and a
//! head it takes is the one httparse reads — the same length, method and target, and every
//! header line kept, its value exactly as sent (the values are kept where they were read).
#![no_main]

use gpucap_fabric::front::http1::read_inference_head;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let head = match read_inference_head(data, 1 << 20) {
        Ok(Some(head)) => head,
        Ok(None) => return,
        Err(name) => panic!("the loop took header {name} but could not keep its value"),
    };
    let mut lines = [httparse::EMPTY_HEADER; 64];
    let mut request = httparse::Request::new(&mut lines);
    assert_eq!(
        request.parse(data).ok(),
        Some(httparse::Status::Complete(head.length))
    );
    assert_eq!(request.method, Some("POST"));
    assert_eq!(request.version, Some(1));
    assert_eq!(request.path, Some(head.target.as_str()));
    assert_eq!(head.headers.len(), request.headers.len());
    for line in request.headers.iter() {
        assert!(
            head.headers
                .get_all(line.name)
                .iter()
                .any(|value| value.as_bytes() == line.value),
            "header {} lost its value",
            line.name
        );
    }
});
