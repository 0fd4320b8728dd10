//! CEL as its specification defines it: a table of expressions with the results the spec (and
//! cel-go, its reference implementation) gives, run through gpucap's own compile-check-evaluate
//! path, so a rule author can rely on the language as documented.

use super::tests::{eval_in, scope};
use super::*;
use serde_json::{Value as Json, json};

/// What the specification says an expression gives.
enum Want {
    Value(Json),
    /// An evaluation error whose message, in lower case, contains this text.
    Error(&'static str),
}

use Want::{Error, Value};

fn t() -> Want {
    Value(json!(true))
}

/// Type denotations and `type()`.
const TYPES: &[(&str, fn() -> Want)] = &[
    ("type(1) == int", t),
    ("type(1u) == uint", t),
    ("type(1.5) == double", t),
    ("type(true) == bool", t),
    ("type('a') == string", t),
    ("type(b'a') == bytes", t),
    ("type([1]) == list", t),
    ("type({'a': 1}) == map", t),
    ("type(null) == null_type", t),
    ("type(int) == type", t),
    ("type(type) == type", t),
    ("type(type(1)) == type", t),
    ("type(1) != double", t),
    ("type(1) != uint", t),
    ("type('1') != int", t),
    ("int != string", t),
    ("[1, 'a', 2.0].map(x, type(x)) == [int, string, double]", t),
    ("type(resource.replicas.min) == int", t),
    ("type(resource.name) == string", t),
    ("type(resource.labels) == map", t),
    ("type(resource.listen) == null_type", t),
    ("int('42') == 42", t),
    ("uint(42) == 42u", t),
    ("double(2) == 2.0", t),
    ("string(42) == '42'", t),
    ("string(b'abc') == 'abc'", t),
    ("bytes('abc') == b'abc'", t),
    ("int(2.9) == 2 && int(-2.9) == -2", t),
    ("dyn(1) == 1", t),
];

/// 64-bit integers: overflow is an error, never wraps.
const INTEGERS: &[(&str, fn() -> Want)] = &[
    ("9223372036854775807 + 1", || Error("overflow")),
    ("-9223372036854775808 - 1", || Error("overflow")),
    ("9223372036854775807 * 2", || Error("overflow")),
    ("-(-9223372036854775808)", || Error("overflow")),
    ("-9223372036854775808 / -1", || Error("overflow")),
    ("-9223372036854775808 % -1", || Error("overflow")),
    ("0u - 1u", || Error("overflow")),
    ("18446744073709551615u + 1u", || Error("overflow")),
    ("9223372036854775807 + 0 == 9223372036854775807", t),
    ("uint(-1)", || Error("overflow")),
    ("int(18446744073709551615u)", || Error("overflow")),
    ("int(1e20)", || Error("overflow")),
    ("int('x')", || Error("")),
];

/// Division and modulo truncate toward zero; by zero is an error for integers, infinity for doubles.
const DIVISION: &[(&str, fn() -> Want)] = &[
    ("-7 / 2 == -3", t),
    ("7 / -2 == -3", t),
    ("-7 % 2 == -1", t),
    ("7 % -2 == 1", t),
    ("-7 % -2 == -1", t),
    ("7u / 2u == 3u && 7u % 2u == 1u", t),
    ("1 / 0", || Error("division by zero")),
    ("1 % 0", || Error("remainder by zero")),
    ("1u / 0u", || Error("division by zero")),
    ("7.0 / 2.0 == 3.5", t),
    ("1.0 / 0.0 == double('Infinity')", t),
    ("-1.0 / 0.0 == double('-Infinity')", t),
    ("0.0 / 0.0 != 0.0 / 0.0", t),
];

/// Equality across numeric types compares values; other mixed types are simply unequal.
const EQUALITY: &[(&str, fn() -> Want)] = &[
    ("1 == 1.0", t),
    ("1 == 1u", t),
    ("1u == 1.0", t),
    ("-1 != 18446744073709551615u", t),
    ("1 != '1'", t),
    ("1 == '1'", || Value(json!(false))),
    ("null == null", t),
    ("1 != null && null != 'a'", t),
    ("[1, 2] == [1.0, 2u]", t),
    ("[1] != ['1']", t),
    ("{'a': 1} == {'a': 1.0}", t),
    ("{1: 'x'} == {1u: 'x'}", t),
    ("{'a': 1} != {'b': 1}", t),
    ("1.0 in [1, 2]", t),
    ("2u in {2: 'x'}", t),
    ("1 < 1.5 && 2u > 1 && 1.5 < 2u", t),
    ("double('NaN') != double('NaN')", t),
];

/// `has()` tests presence; `&&` and `||` absorb errors when the other side decides.
const PRESENCE_AND_LOGIC: &[(&str, fn() -> Want)] = &[
    ("has({'a': 1}.a)", t),
    ("has({'a': 1}.b)", || Value(json!(false))),
    ("has(resource.labels.team)", t),
    ("!has(resource.labels.owner)", t),
    ("has(resource.listen)", t),
    ("false && 1 / 0 == 1", || Value(json!(false))),
    ("1 / 0 == 1 && false", || Value(json!(false))),
    ("true || 1 / 0 == 1", t),
    ("1 / 0 == 1 || true", t),
    ("1 / 0 == 1 && true", || Error("division by zero")),
    ("true ? 1 : 1 / 0", || Value(json!(1))),
    ("!false && !(1 > 2)", t),
];

/// The standard string functions and the strings extension.
const STRINGS: &[(&str, fn() -> Want)] = &[
    ("size('héllo') == 5", t),
    ("size(b'h\\xc3\\xa9') == 3", t),
    ("'hello'.contains('ell')", t),
    ("'hello'.startsWith('he') && 'hello'.endsWith('lo')", t),
    ("'eu-central-1'.matches('^eu-[a-z]+-[0-9]$')", t),
    ("'ab' + 'c' == 'abc'", t),
    ("'abc' < 'abd' && 'b' > 'abc'", t),
    ("'ÉCOLE'.lowerAscii() == 'École'.lowerAscii().upperAscii().lowerAscii()", t),
    ("'a,b,c'.split(',') == ['a', 'b', 'c']", t),
    ("'  x '.trim() == 'x'", t),
    ("'hello'.substring(1, 3) == 'el'", t),
    ("'hello'.indexOf('l') == 2 && 'hello'.lastIndexOf('l') == 3", t),
    ("'hello'.charAt(1) == 'e'", t),
    ("'a-b-c'.replace('-', '+') == 'a+b+c'", t),
    ("['a', 'b'].join('/') == 'a/b'", t),
    ("'hello'.substring(4, 9)", || Error("")),
    ("'x'.matches('(')", || Error("")),
];

/// Lists: size, concatenation, membership, indexing, the macros and the lists extension.
const LISTS: &[(&str, fn() -> Want)] = &[
    ("size([1, 2, 3]) == 3 && [1, 2, 3].size() == 3", t),
    ("[1, 2] + [3] == [1, 2, 3]", t),
    ("2 in [1, 2] && !(5 in [1, 2])", t),
    ("[1, 2, 3][1] == 2", t),
    ("[1, 2, 3][3]", || Error("")),
    ("[1, 2, 3].all(x, x > 0)", t),
    ("[1, 2, 3].exists(x, x > 2)", t),
    ("[1, 2, 3].exists_one(x, x > 1)", || Value(json!(false))),
    ("[1, 2, 3].map(x, x * 2) == [2, 4, 6]", t),
    ("[1, 2, 3].filter(x, x % 2 == 1) == [1, 3]", t),
    ("[1, 2, 3].map(x, x > 1, x * 10) == [20, 30]", t),
    ("[].all(x, x > 0) && ![].exists(x, x > 0)", t),
    ("[0, 1].all(x, 1 / x > 0)", || Error("division by zero")),
    ("[0, 1].exists(x, 1 / x > 0)", t),
    ("{'a': 1, 'b': 2}.all(k, k in ['a', 'b'])", t),
    ("[[1], [2, 3]].flatten() == [1, 2, 3]", t),
    ("[1, 2, 2, 1].distinct() == [1, 2]", t),
    ("[1, 2, 3].reverse() == [3, 2, 1]", t),
    ("[3, 1, 2].sort() == [1, 2, 3]", t),
    ("[1, 2, 3, 4].slice(1, 3) == [2, 3]", t),
    ("math.greatest([1, 5, 3]) == 5 && math.least(2, 1.5) == 1.5", t),
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
            match (want(), got) {
                (Value(w), Ok(g)) if w == g => {}
                (Error(text), Err(e)) if e.to_string().to_lowercase().contains(text) => {}
                (Value(w), got) => wrong.push(format!("[{table}] {src}: want {w}, got {got:?}")),
                (Error(text), got) => {
                    wrong.push(format!("[{table}] {src}: want an error with {text:?}, got {got:?}"))
                }
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
