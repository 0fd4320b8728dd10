//! CEL as its specification defines it: a table of expressions with the results the spec (and
//! cel-go, its reference implementation) gives, run through gpucap's own compile-check-evaluate
//! path, so a rule author can rely on the language as documented.

use super::tests::{eval_in, scope};
use super::*;
use serde_json::{Value as Json, json};

/// What the specification says an expression gives.
#[derive(Clone, Copy)]
enum Want {
    Bool(bool),
    Int(i64),
    /// An evaluation error whose message, in lower case, contains this text.
    Error(&'static str),
}

use Want::Error;

const T: Want = Want::Bool(true);
const F: Want = Want::Bool(false);

impl Want {
    fn value(self) -> Option<Json> {
        match self {
            Want::Bool(b) => Some(json!(b)),
            Want::Int(i) => Some(json!(i)),
            Want::Error(_) => None,
        }
    }
}

/// Type denotations and `type()`.
const TYPES: &[(&str, Want)] = &[
    ("type(1) == int", T),
    ("type(1u) == uint", T),
    ("type(1.5) == double", T),
    ("type(true) == bool", T),
    ("type('a') == string", T),
    ("type(b'a') == bytes", T),
    ("type([1]) == list", T),
    ("type({'a': 1}) == map", T),
    ("type(null) == null_type", T),
    ("type(int) == type", T),
    ("type(type) == type", T),
    ("type(type(1)) == type", T),
    ("type(1) != double", T),
    ("type(1) != uint", T),
    ("type('1') != int", T),
    ("int != string", T),
    ("[1, 'a', 2.0].map(x, type(x)) == [int, string, double]", T),
    ("type(resource.replicas.min) == int", T),
    ("type(resource.name) == string", T),
    ("type(resource.labels) == map", T),
    ("type(resource.listen) == null_type", T),
    ("int('42') == 42", T),
    ("uint(42) == 42u", T),
    ("double(2) == 2.0", T),
    ("string(42) == '42'", T),
    ("string(b'abc') == 'abc'", T),
    ("bytes('abc') == b'abc'", T),
    ("int(2.9) == 2 && int(-2.9) == -2", T),
    ("dyn(1) == 1", T),
];

/// 64-bit integers: overflow is an error, never wraps.
const INTEGERS: &[(&str, Want)] = &[
    ("9223372036854775807 + 1", Error("overflow")),
    ("-9223372036854775808 - 1", Error("overflow")),
    ("9223372036854775807 * 2", Error("overflow")),
    ("-(-9223372036854775808)", Error("overflow")),
    ("-9223372036854775808 / -1", Error("overflow")),
    ("-9223372036854775808 % -1", Error("overflow")),
    ("0u - 1u", Error("overflow")),
    ("18446744073709551615u + 1u", Error("overflow")),
    ("9223372036854775807 + 0 == 9223372036854775807", T),
    ("uint(-1)", Error("overflow")),
    ("int(18446744073709551615u)", Error("overflow")),
    ("int(1e20)", Error("overflow")),
    ("int('x')", Error("")),
];

/// Division and modulo truncate toward zero; by zero is an error for integers, infinity for doubles.
const DIVISION: &[(&str, Want)] = &[
    ("-7 / 2 == -3", T),
    ("7 / -2 == -3", T),
    ("-7 % 2 == -1", T),
    ("7 % -2 == 1", T),
    ("-7 % -2 == -1", T),
    ("7u / 2u == 3u && 7u % 2u == 1u", T),
    ("1 / 0", Error("division by zero")),
    ("1 % 0", Error("remainder by zero")),
    ("1u / 0u", Error("division by zero")),
    ("7.0 / 2.0 == 3.5", T),
    ("1.0 / 0.0 == double('Infinity')", T),
    ("-1.0 / 0.0 == double('-Infinity')", T),
    ("0.0 / 0.0 != 0.0 / 0.0", T),
];

/// Equality across numeric types compares values; other mixed types are simply unequal.
const EQUALITY: &[(&str, Want)] = &[
    ("1 == 1.0", T),
    ("1 == 1u", T),
    ("1u == 1.0", T),
    ("-1 != 18446744073709551615u", T),
    ("1 != '1'", T),
    ("1 == '1'", F),
    ("null == null", T),
    ("1 != null && null != 'a'", T),
    ("[1, 2] == [1.0, 2u]", T),
    ("[1] != ['1']", T),
    ("{'a': 1} == {'a': 1.0}", T),
    ("{1: 'x'} == {1u: 'x'}", T),
    ("{'a': 1} != {'b': 1}", T),
    ("1.0 in [1, 2]", T),
    ("2u in {2: 'x'}", T),
    ("1 < 1.5 && 2u > 1 && 1.5 < 2u", T),
    ("double('NaN') != double('NaN')", T),
];

/// `has()` tests presence; `&&` and `||` absorb errors when the other side decides.
const PRESENCE_AND_LOGIC: &[(&str, Want)] = &[
    ("has({'a': 1}.a)", T),
    ("has({'a': 1}.b)", F),
    ("has(resource.labels.team)", T),
    ("!has(resource.labels.owner)", T),
    ("has(resource.listen)", T),
    ("false && 1 / 0 == 1", F),
    ("1 / 0 == 1 && false", F),
    ("true || 1 / 0 == 1", T),
    ("1 / 0 == 1 || true", T),
    ("1 / 0 == 1 && true", Error("division by zero")),
    ("true ? 1 : 1 / 0", Want::Int(1)),
    ("!false && !(1 > 2)", T),
];

/// The standard string functions and the strings extension.
const STRINGS: &[(&str, Want)] = &[
    ("size('héllo') == 5", T),
    ("size(b'h\\xc3\\xa9') == 3", T),
    ("'hello'.contains('ell')", T),
    ("'hello'.startsWith('he') && 'hello'.endsWith('lo')", T),
    ("'eu-central-1'.matches('^eu-[a-z]+-[0-9]$')", T),
    ("'ab' + 'c' == 'abc'", T),
    ("'abc' < 'abd' && 'b' > 'abc'", T),
    // ASCII letters only change case; other letters stay as they are.
    ("'ÉCOLE'.lowerAscii() == 'École'", T),
    ("'école'.upperAscii() == 'éCOLE'", T),
    ("'a,b,c'.split(',') == ['a', 'b', 'c']", T),
    ("'  x '.trim() == 'x'", T),
    ("'hello'.substring(1, 3) == 'el'", T),
    (
        "'hello'.indexOf('l') == 2 && 'hello'.lastIndexOf('l') == 3",
        T,
    ),
    ("'hello'.charAt(1) == 'e'", T),
    ("'a-b-c'.replace('-', '+') == 'a+b+c'", T),
    ("['a', 'b'].join('/') == 'a/b'", T),
    ("'hello'.substring(4, 9)", Error("")),
    ("'x'.matches('(')", Error("not a valid regex")),
    ("matches('abc', 'b') && !'abc'.matches('^b')", T),
    ("['a1', 'b2'].all(s, s.matches('[a-z][0-9]'))", T),
];

/// Lists: size, concatenation, membership, indexing, the macros and the lists extension.
const LISTS: &[(&str, Want)] = &[
    ("size([1, 2, 3]) == 3 && [1, 2, 3].size() == 3", T),
    ("[1, 2] + [3] == [1, 2, 3]", T),
    ("2 in [1, 2] && !(5 in [1, 2])", T),
    ("[1, 2, 3][1] == 2", T),
    ("[1, 2, 3][3]", Error("")),
    ("[1, 2, 3].all(x, x > 0)", T),
    ("[1, 2, 3].exists(x, x > 2)", T),
    ("[1, 2, 3].exists_one(x, x > 1)", F),
    ("[1, 2, 3].map(x, x * 2) == [2, 4, 6]", T),
    ("[1, 2, 3].filter(x, x % 2 == 1) == [1, 3]", T),
    ("[1, 2, 3].map(x, x > 1, x * 10) == [20, 30]", T),
    ("[].all(x, x > 0) && ![].exists(x, x > 0)", T),
    ("[0, 1].all(x, 1 / x > 0)", Error("division by zero")),
    ("[0, 1].exists(x, 1 / x > 0)", T),
    ("{'a': 1, 'b': 2}.all(k, k in ['a', 'b'])", T),
    ("[[1], [2, 3]].flatten() == [1, 2, 3]", T),
    ("[1, 2, 2, 1].distinct() == [1, 2]", T),
    ("[1, 2, 3].reverse() == [3, 2, 1]", T),
    ("[3, 1, 2].sort() == [1, 2, 3]", T),
    ("[1, 2, 3, 4].slice(1, 3) == [2, 3]", T),
    (
        "math.greatest([1, 5, 3]) == 5 && math.least(2, 1.5) == 1.5",
        T,
    ),
];

#[test]
fn the_language_behaves_as_its_specification_says() {
    let resource = json!({
        "name": "fraud",
        "labels": {"team": "risk"},
        "replicas": {"min": 1, "max": 4},
        "listen": null,
    });
    let tables = [
        ("types", TYPES),
        ("integers", INTEGERS),
        ("division", DIVISION),
        ("equality", EQUALITY),
        ("presence and logic", PRESENCE_AND_LOGIC),
        ("strings", STRINGS),
        ("lists", LISTS),
    ];
    let mut wrong = Vec::new();
    let mut total = 0;
    for (table, cases) in tables {
        for (src, want) in cases {
            total += 1;
            let compiled = on_large_stack(|| compile(src, &scope(), &Limits::default())).unwrap();
            let got = match compiled {
                Err(problems) => {
                    wrong.push(format!("[{table}] {src}: refused at load: {problems:?}"));
                    continue;
                }
                Ok(c) => eval_in(&c, &[("resource", resource.clone())]),
            };
            match (want, want.value(), got) {
                (_, Some(w), Ok(g)) if w == g => {}
                (Error(text), _, Err(e)) if e.to_string().to_lowercase().contains(text) => {}
                (Error(text), _, got) => wrong.push(format!(
                    "[{table}] {src}: want an error with {text:?}, got {got:?}"
                )),
                (_, w, got) => wrong.push(format!("[{table}] {src}: want {w:?}, got {got:?}")),
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {total} expressions disagree with the specification:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}
