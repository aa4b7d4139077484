//! Evaluator: runs a compiled expression against an event's facts, without allocating.
//!
//! Values are borrowed from the event or the compiled form. Anything that cannot be decided
//! (a missing path, a type mismatch, a division by zero) is *unknown*, carrying a [`Unknown`]
//! that says why and where; conditions use Kleene's three-valued logic.

use serde_json::{Map, Value};

use super::ast::{EventField, Function, MemberField, Path, Segment, Span};
use super::compiler::{ArithOp, CmpOp, Const, List, MemberQuery, Node};
use crate::calendar::DAY_NAMES;
use crate::calendar::Period;
use crate::event::{Event, object_get};
use crate::facts::Facts;

/// Numbers closer than this are equal for `==` and `!=`.
pub const EQUALITY_TOLERANCE: f64 = 1e-9;

/// A value during evaluation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Val<'a> {
    /// JSON `null`.
    Null,
    /// A boolean.
    Bool(bool),
    /// A number (every number is a double).
    Num(f64),
    /// A string.
    Str(&'a str),
    /// A string as `lower()` or `upper()` see it: the text, folded only when it is read.
    Folded(&'a str, Case),
    /// A JSON array.
    Array(&'a [Value]),
    /// A JSON object.
    Object(&'a Map<String, Value>),
}

/// How `lower()` and `upper()` fold a string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Case {
    /// `lower()`.
    Lower,
    /// `upper()`.
    Upper,
}

/// Longest folded text kept on the stack; a longer one is built on the heap (rare: such a value
/// is longer than any category or code a rule compares).
const FOLD_BUFFER: usize = 128;

/// Calls `f` with the text of a string value, folded when it is a `lower()`/`upper()` view;
/// `None` for a value that is not a string.
pub fn with_text<R>(value: Val<'_>, f: impl FnOnce(&str) -> R) -> Option<R> {
    let (text, case) = match value {
        Val::Str(s) => return Some(f(s)),
        Val::Folded(s, case) => (s, case),
        _ => return None,
    };
    let mut buffer = [0u8; FOLD_BUFFER];
    // ASCII (nearly every category, code and region) folds byte by byte.
    if text.is_ascii() && text.len() <= FOLD_BUFFER {
        let folded = &mut buffer[..text.len()];
        folded.copy_from_slice(text.as_bytes());
        match case {
            Case::Lower => folded.make_ascii_lowercase(),
            Case::Upper => folded.make_ascii_uppercase(),
        }
        if let Ok(folded) = std::str::from_utf8(folded) {
            return Some(f(folded));
        }
    }
    let mut len = 0;
    let mut fits = true;
    'chars: for c in text.chars() {
        let mut push = |folded: char| {
            let width = folded.len_utf8();
            if len + width > FOLD_BUFFER {
                return false;
            }
            folded.encode_utf8(&mut buffer[len..len + width]);
            len += width;
            true
        };
        let ok = match case {
            Case::Lower => c.to_lowercase().all(&mut push),
            Case::Upper => c.to_uppercase().all(&mut push),
        };
        if !ok {
            fits = false;
            break 'chars;
        }
    }
    match std::str::from_utf8(&buffer[..len]) {
        Ok(folded) if fits => Some(f(folded)),
        _ => Some(f(&fold(text, case))),
    }
}

/// A folded copy of a string (on the heap).
fn fold(text: &str, case: Case) -> String {
    match case {
        Case::Lower => text.to_lowercase(),
        Case::Upper => text.to_uppercase(),
    }
}

/// The type of a value, for reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValType {
    /// `null`.
    Null,
    /// A boolean.
    Bool,
    /// A number.
    Number,
    /// A string.
    Str,
    /// An array.
    Array,
    /// An object.
    Object,
}

impl ValType {
    /// The type's name in messages.
    pub fn name(self) -> &'static str {
        match self {
            ValType::Null => "null",
            ValType::Bool => "boolean",
            ValType::Number => "number",
            ValType::Str => "string",
            ValType::Array => "array",
            ValType::Object => "object",
        }
    }
}

impl<'a> Val<'a> {
    /// Borrows a JSON value.
    pub fn from_json(v: &'a Value) -> Val<'a> {
        match v {
            Value::Null => Val::Null,
            Value::Bool(b) => Val::Bool(*b),
            // Every JSON number this engine reads is a double (as in the original).
            Value::Number(n) => Val::Num(n.as_f64().unwrap_or(f64::NAN)),
            Value::String(s) => Val::Str(s),
            Value::Array(a) => Val::Array(a),
            Value::Object(o) => Val::Object(o),
        }
    }

    fn from_const(c: &'a Const) -> Val<'a> {
        match c {
            Const::Number(n) => Val::Num(*n),
            Const::Str(s) => Val::Str(s),
            Const::Bool(b) => Val::Bool(*b),
            Const::Null => Val::Null,
            Const::Array(items) => Val::Array(items),
        }
    }

    /// The value as JSON (copies it; for traces, not the fast path).
    pub fn to_json(&self) -> Value {
        match *self {
            Val::Null => Value::Null,
            Val::Bool(b) => Value::Bool(b),
            // Whole numbers print as integers, as they were most likely sent.
            Val::Num(n) if n.fract() == 0.0 && n.abs() < 9_007_199_254_740_992.0 => Value::from(n as i64),
            Val::Num(n) => serde_json::Number::from_f64(n).map_or(Value::Null, Value::Number),
            Val::Str(s) => Value::String(s.to_owned()),
            Val::Folded(s, case) => Value::String(fold(s, case)),
            Val::Array(a) => Value::Array(a.to_vec()),
            Val::Object(o) => Value::Object(o.clone()),
        }
    }

    /// The value's type.
    pub fn val_type(&self) -> ValType {
        match self {
            Val::Null => ValType::Null,
            Val::Bool(_) => ValType::Bool,
            Val::Num(_) => ValType::Number,
            Val::Str(_) | Val::Folded(..) => ValType::Str,
            Val::Array(_) => ValType::Array,
            Val::Object(_) => ValType::Object,
        }
    }
}

/// Why a result is unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// A path is absent from the event.
    Missing,
    /// An operator needs numbers and got other types.
    NeedsNumbers(ValType, ValType),
    /// Unary minus on something that is not a number.
    NegNeedsNumber(ValType),
    /// `contains` on something that is neither a string nor an array.
    NotSearchable(ValType),
    /// `contains` on a string with a needle that is not a string.
    NeedleNotString(ValType),
    /// `matches` on something that is not a string.
    MatchesNeedsString(ValType),
    /// A value in a boolean position that is not `true` or `false`.
    NotBoolean(ValType),
    /// Division or remainder by zero.
    DivisionByZero,
    /// A formula's value is not a number.
    NotNumber(ValType),
    /// `in` on something that is not a list.
    NotAList(ValType),
    /// `len` of something that is neither a string, a list nor an object.
    NoLength(ValType),
    /// `lower` or `upper` of something that is not a string.
    NotAString(ValType),
    /// A member function on an event without an actor.
    NoActor,
    /// `days_since` with no earlier event of the type.
    NoEarlier,
    /// `member.balance` without a ledger.
    NoLedger,
    /// The ledger could not be read (the event fails with the ledger's error).
    MemberUnavailable,
    /// A part whose types can never fit its operator, found at load; the number indexes the
    /// program's warnings, which say why.
    Impossible(u16),
}

impl Reason {
    /// The stable labels of reasons, for metrics; [`Reason::label_index`] indexes it.
    pub const LABELS: [&'static str; 5] =
        ["missing_path", "not_a_number", "type_mismatch", "not_boolean", "division_by_zero"];

    /// The position of this reason's label in [`Reason::LABELS`].
    pub fn label_index(self) -> usize {
        match self {
            Reason::Missing | Reason::NoActor | Reason::NoEarlier | Reason::NoLedger | Reason::MemberUnavailable => 0,
            Reason::NeedsNumbers(..) | Reason::NegNeedsNumber(_) | Reason::NotNumber(_) => 1,
            Reason::NotSearchable(_)
            | Reason::NeedleNotString(_)
            | Reason::MatchesNeedsString(_)
            | Reason::NotAList(_)
            | Reason::NoLength(_)
            | Reason::NotAString(_)
            | Reason::Impossible(_) => 2,
            Reason::NotBoolean(_) => 3,
            Reason::DivisionByZero => 4,
        }
    }
}

/// An unknown result: why, and which part of the expression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unknown {
    /// Why.
    pub reason: Reason,
    /// The part of the expression that could not be decided.
    pub span: Span,
}

impl Unknown {
    /// Explains the unknown in words, quoting the expression it came from.
    pub fn explain(&self, src: &str) -> String {
        let at = self.span.text(src);
        match self.reason {
            Reason::Missing => format!("`{at}` is missing"),
            Reason::NeedsNumbers(l, r) => format!("`{at}` needs numbers, got {} and {}", l.name(), r.name()),
            Reason::NegNeedsNumber(t) => format!("`{at}` needs a number, got {}", t.name()),
            Reason::NotSearchable(t) => format!("`{at}`: contains needs a string or an array, got {}", t.name()),
            Reason::NeedleNotString(t) => format!("`{at}`: contains on a string needs a string, got {}", t.name()),
            Reason::MatchesNeedsString(t) => format!("`{at}`: matches needs a string, got {}", t.name()),
            Reason::NotBoolean(t) => format!("`{at}` is {}, not true or false", t.name()),
            Reason::DivisionByZero => format!("`{at}` divides by zero"),
            Reason::NotNumber(t) => format!("`{at}` is {}, not a number", t.name()),
            Reason::NotAList(t) => format!("`{at}`: in needs a list, got {}", t.name()),
            Reason::NoLength(t) => format!("`{at}`: len needs a string, a list or an object, got {}", t.name()),
            Reason::NotAString(t) => format!("`{at}` is {}, not a string", t.name()),
            Reason::NoActor => format!("`{at}` reads the member's history, but the event has no actor_id"),
            Reason::NoEarlier => format!("`{at}`: the member has no earlier event of this type"),
            Reason::NoLedger => format!("`{at}`: there is no member state without a ledger"),
            Reason::MemberUnavailable => format!("`{at}`: the ledger could not be read"),
            Reason::Impossible(_) => format!("`{at}` can never be decided: its types do not fit"),
        }
    }
}

/// The result of a condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Truth {
    /// Passes.
    True,
    /// Does not pass.
    False,
    /// Cannot be decided; never passes.
    Unknown(Unknown),
}

type Res<'a> = Result<Val<'a>, Unknown>;

/// Reads a payload path from a payload stored as JSON (member history); `None` when absent or
/// when the path is not a payload path.
pub fn resolve_json<'a>(path: &Path, payload: &'a Value) -> Option<Val<'a>> {
    let Path::Payload(segments) = path else { return None };
    walk(Val::from_json(payload), segments)
}

/// Follows a payload path's steps from a value.
fn walk<'a>(mut current: Val<'a>, segments: &[Segment]) -> Option<Val<'a>> {
    for segment in segments {
        current = match (segment, current) {
            (Segment::Key(k), Val::Object(map)) => Val::from_json(object_get(map, k)?),
            (Segment::Index(i), Val::Array(items)) => Val::from_json(items.get(*i)?),
            _ => return None,
        };
    }
    Some(current)
}

/// Reads a path from an event; `None` when absent.
pub fn resolve<'a>(path: &Path, event: &'a Event) -> Option<Val<'a>> {
    match path {
        Path::Payload(segments) => walk(Val::Object(event.payload.as_ref()?), segments),
        Path::Meta(key) => event.meta_get(key).map(Val::Str),
        // The member's state is not in the event: the compiler reads it as a member value.
        Path::Member(_) | Path::Original(_) => None,
        Path::MetaNeverPresent(_) => None,
        Path::Event(field) => match field {
            EventField::Id => Some(Val::Str(&event.id)),
            EventField::Type => Some(Val::Str(&event.event_type)),
            EventField::Source => event.source.as_deref().map(Val::Str),
            EventField::ActorId => event.actor_id.as_deref().map(Val::Str),
        },
    }
}

/// Evaluates a node in a boolean position.
pub fn truth(node: &Node, facts: &Facts<'_>) -> Truth {
    match node {
        // The most common condition, `path op constant`, skips the general operand plumbing.
        Node::Compare(op, l, r, span) => match (&**l, &**r) {
            (Node::Path(path, path_span), Node::Const(constant)) => {
                compare_path_to_constant(*op, path, *path_span, constant, *span, facts)
            }
            _ => value_truth(node, facts),
        },
        Node::And(l, r) => match truth(l, facts) {
            Truth::False => Truth::False,
            left => match (left, truth(r, facts)) {
                (_, Truth::False) => Truth::False,
                (Truth::True, right) => right,
                (unknown, _) => unknown,
            },
        },
        Node::Or(l, r) => match truth(l, facts) {
            Truth::True => Truth::True,
            left => match (left, truth(r, facts)) {
                (_, Truth::True) => Truth::True,
                (Truth::False, right) => right,
                (unknown, _) => unknown,
            },
        },
        Node::Not(inner, _) => match truth(inner, facts) {
            Truth::True => Truth::False,
            Truth::False => Truth::True,
            unknown => unknown,
        },
        Node::In { needle, list, negated, span } => match membership(needle, list, *span, facts) {
            Ok(found) => {
                if found != *negated {
                    Truth::True
                } else {
                    Truth::False
                }
            }
            Err(u) => Truth::Unknown(u),
        },
        other => value_truth(other, facts),
    }
}

/// `x in list`: unknown when x is (whatever the list holds), else whether some element `==` x.
fn membership(needle: &Node, list: &List, span: Span, facts: &Facts<'_>) -> Result<bool, Unknown> {
    // The common `path in [...]` reads the path directly, as `path == constant` does.
    let needle = match needle {
        Node::Path(path, path_span) => {
            resolve(path, facts.event).ok_or(Unknown { reason: Reason::Missing, span: *path_span })?
        }
        other => value(other, facts)?,
    };
    match list {
        List::Const(set) => Ok(set.contains(needle)),
        List::Value(node) => match value(node, facts)? {
            Val::Array(items) => Ok(items.iter().any(|item| values_equal(Val::from_json(item), needle))),
            other => Err(Unknown { reason: Reason::NotAList(other.val_type()), span }),
        },
    }
}

/// A value in a boolean position: `true` and `false` are themselves, anything else is unknown.
fn value_truth(node: &Node, facts: &Facts<'_>) -> Truth {
    match value(node, facts) {
        Ok(Val::Bool(true)) => Truth::True,
        Ok(Val::Bool(false)) => Truth::False,
        Ok(v) => Truth::Unknown(Unknown { reason: Reason::NotBoolean(v.val_type()), span: span_of(node) }),
        Err(u) => Truth::Unknown(u),
    }
}

fn span_of(node: &Node) -> Span {
    match node {
        Node::Path(_, s)
        | Node::Neg(_, s)
        | Node::Arith(_, _, _, s)
        | Node::Compare(_, _, _, s)
        | Node::Contains(_, _, s)
        | Node::Matches(_, _, s)
        | Node::Not(_, s)
        | Node::Never(_, s)
        | Node::Call(_, _, s)
        | Node::Member(_, s)
        | Node::Original(_, s)
        | Node::In { span: s, .. } => *s,
        Node::And(l, r) | Node::Or(l, r) => span_of(l).to(span_of(r)),
        Node::Const(_) => Span::default(),
    }
}

/// Evaluates a node to a number (formulas).
pub fn number(node: &Node, facts: &Facts<'_>) -> Result<f64, Unknown> {
    // The most common formula, `path op constant`, skips the general value plumbing (whose
    // results travel through memory); the same steps as `value` takes, so the same outcomes.
    if let Node::Arith(op, l, r, span) = node {
        if let (Node::Path(path, path_span), Node::Const(constant)) = (&**l, &**r) {
            let left = resolve(path, facts.event).ok_or(Unknown { reason: Reason::Missing, span: *path_span })?;
            return arith_number(*op, left, Val::from_const(constant), *span);
        }
    }
    match value(node, facts)? {
        Val::Num(n) => Ok(n),
        other => Err(Unknown { reason: Reason::NotNumber(other.val_type()), span: span_of(node) }),
    }
}

/// Evaluates a node to a value.
pub fn value<'a>(node: &'a Node, facts: &Facts<'a>) -> Res<'a> {
    let bool_of = |t: Truth| match t {
        Truth::True => Ok(Val::Bool(true)),
        Truth::False => Ok(Val::Bool(false)),
        Truth::Unknown(u) => Err(u),
    };
    match node {
        Node::Const(c) => Ok(Val::from_const(c)),
        Node::Path(path, span) => resolve(path, facts.event).ok_or(Unknown { reason: Reason::Missing, span: *span }),
        Node::Neg(inner, span) => match value(inner, facts)? {
            Val::Num(n) => Ok(Val::Num(-n)),
            other => Err(Unknown { reason: Reason::NegNeedsNumber(other.val_type()), span: *span }),
        },
        Node::Arith(op, l, r, span) => arith_number(*op, value(l, facts)?, value(r, facts)?, *span).map(Val::Num),
        Node::Compare(op, l, r, span) => compare(*op, operand(l, facts), operand(r, facts), *span),
        Node::Contains(l, r, span) => contains(value(l, facts)?, value(r, facts)?, *span),
        Node::Matches(subject, regex, span) => {
            let subject = value(subject, facts)?;
            with_text(subject, |s| Val::Bool(regex.is_match(s)))
                .ok_or(Unknown { reason: Reason::MatchesNeedsString(subject.val_type()), span: *span })
        }
        Node::And(..) | Node::Or(..) | Node::Not(..) | Node::In { .. } => bool_of(truth(node, facts)),
        Node::Never(index, span) => Err(Unknown { reason: Reason::Impossible(*index), span: *span }),
        Node::Call(function, args, _) => call(*function, args, facts),
        Node::Member(query, span) => member(query, facts, *span),
        Node::Original(path, span) => facts
            .original
            .and_then(|original| resolve(path, original))
            .ok_or(Unknown { reason: Reason::Missing, span: *span }),
    }
}

/// A member function or value: the actor's earlier events (as the ledger keeps them) and this
/// one. Without a ledger only this event counts; without an actor every member value is unknown.
fn member<'a>(query: &MemberQuery, facts: &Facts<'a>, span: Span) -> Res<'a> {
    let unknown = |reason| Unknown { reason, span };
    let event = facts.event;
    if event.actor_id.is_none() {
        return Err(unknown(Reason::NoActor));
    }
    let at = facts.at.as_microsecond();
    let is_of = |event_type: &str| event.event_type.chars().flat_map(char::to_lowercase).eq(event_type.chars());
    let window = |period: Period| {
        let (from, to) = period.bounds(facts.at, facts.zone);
        (from.as_microsecond(), to.as_microsecond())
    };
    let failed = || unknown(Reason::MemberUnavailable);
    let state = facts.member;
    let earlier_count = |event_type: &str, (from, to): (i64, i64)| match state {
        None => Ok(0),
        Some(m) => m.count(event_type, from, to).ok_or_else(failed),
    };
    Ok(match query {
        MemberQuery::Points(field) => {
            let member = state.ok_or(unknown(Reason::NoLedger))?;
            match field {
                MemberField::Balance => Val::Num(member.balance().ok_or_else(failed)? as f64),
                MemberField::Pending => Val::Num(member.pending().ok_or_else(failed)? as f64),
                MemberField::Tier => match member.tier().ok_or_else(failed)? {
                    Some(tier) => Val::Str(tier),
                    None => Val::Null,
                },
            }
        }
        MemberQuery::Count { event_type, period } => {
            let earlier = earlier_count(event_type, window(*period))?;
            Val::Num((earlier + u64::from(is_of(event_type))) as f64)
        }
        MemberQuery::Sum { event_type, path, period } => {
            let own = match resolve(path, event) {
                Some(Val::Num(n)) if is_of(event_type) => n,
                _ => 0.0,
            };
            let (from, to) = window(*period);
            let earlier = match state {
                None => 0.0,
                Some(m) => m.sum(event_type, path, from, to).ok_or_else(failed)?,
            };
            Val::Num(earlier + own)
        }
        MemberQuery::First { event_type } => {
            Val::Bool(is_of(event_type) && earlier_count(event_type, (i64::MIN, i64::MAX))? == 0)
        }
        MemberQuery::DaysSince { event_type } => {
            let member = state.ok_or(unknown(Reason::NoEarlier))?;
            let latest = member.times(event_type, at.saturating_add(1), 1).ok_or_else(failed)?;
            let then = latest.first().ok_or(unknown(Reason::NoEarlier))?;
            Val::Num(((at - then) / MICROS_PER_DAY) as f64)
        }
        MemberQuery::Streak { event_type, period } => {
            Val::Num(streak(event_type, *period, facts, is_of(event_type)).ok_or_else(failed)? as f64)
        }
    })
}

const MICROS_PER_DAY: i64 = 86_400 * 1_000_000;
/// Most earlier events a streak reads.
const STREAK_EVENTS: usize = 10_000;

/// Consecutive periods up to the event's with an event of the type; 0 when the event's period
/// has none. `None` when the storage failed.
fn streak(event_type: &str, period: Period, facts: &Facts<'_>, own: bool) -> Option<u64> {
    let start_of = |micros: i64| {
        let at = jiff::Timestamp::from_microsecond(micros).unwrap_or(facts.at);
        period.bounds(at, facts.zone).0.as_microsecond()
    };
    let (start, end) = period.bounds(facts.at, facts.zone);
    let (start, end) = (start.as_microsecond(), end.as_microsecond());
    let Some(member) = facts.member else { return Some(u64::from(own)) };
    if !own && member.count(event_type, start, end)? == 0 {
        return Some(0);
    }
    let mut streak = 1;
    let mut expected = start_of(start - 1);
    for time in member.times(event_type, start, STREAK_EVENTS)? {
        let period_start = start_of(time);
        if period_start == expected {
            streak += 1;
            expected = start_of(period_start - 1);
        } else if period_start < expected {
            break;
        }
    }
    Some(streak)
}

/// A function's value: the event time's local day or hour, or a pure function of its
/// arguments (each a number, except `len`'s).
fn call<'a>(function: Function, args: &'a [Node], facts: &Facts<'a>) -> Res<'a> {
    let number = |arg: &'a Node| match value(arg, facts)? {
        Val::Num(n) => Ok(n),
        other => Err(Unknown { reason: Reason::NotNumber(other.val_type()), span: span_of(arg) }),
    };
    let first = || args.first().map_or(Ok(f64::NAN), number);
    Ok(match function {
        Function::DayOfWeek => {
            let day = facts.zone.civil(facts.at).weekday().to_monday_zero_offset();
            Val::Str(DAY_NAMES.get(usize::try_from(day).unwrap_or(0)).copied().unwrap_or("mon"))
        }
        Function::Hour => Val::Num(f64::from(facts.zone.civil(facts.at).hour())),
        Function::Abs => Val::Num(first()?.abs()),
        Function::Round => Val::Num(first()?.round()),
        Function::Floor => Val::Num(first()?.floor()),
        Function::Ceil => Val::Num(first()?.ceil()),
        Function::Min | Function::Max => {
            let mut result: Option<f64> = None;
            for arg in args {
                let n = number(arg)?;
                result = Some(match result {
                    None => n,
                    Some(m) if function == Function::Min => m.min(n),
                    Some(m) => m.max(n),
                });
            }
            Val::Num(result.unwrap_or(f64::NAN))
        }
        Function::Lower | Function::Upper => {
            let case = if function == Function::Lower { Case::Lower } else { Case::Upper };
            let Some(arg) = args.first() else { return Ok(Val::Null) };
            match value(arg, facts)? {
                Val::Str(s) | Val::Folded(s, _) => Val::Folded(s, case),
                other => return Err(Unknown { reason: Reason::NotAString(other.val_type()), span: span_of(arg) }),
            }
        }
        Function::Count | Function::Sum | Function::First | Function::Streak | Function::DaysSince => {
            // Compiled to member values, never to calls.
            return Err(Unknown {
                reason: Reason::MemberUnavailable,
                span: args.first().map_or(Span::default(), span_of),
            });
        }
        Function::Len => {
            let Some(arg) = args.first() else { return Ok(Val::Num(0.0)) };
            match value(arg, facts)? {
                Val::Str(s) => Val::Num(s.chars().count() as f64),
                folded @ Val::Folded(..) => Val::Num(with_text(folded, |s| s.chars().count()).unwrap_or(0) as f64),
                Val::Array(items) => Val::Num(items.len() as f64),
                Val::Object(map) => Val::Num(map.len() as f64),
                other => return Err(Unknown { reason: Reason::NoLength(other.val_type()), span: span_of(arg) }),
            }
        }
    })
}

fn arith_number(op: ArithOp, l: Val<'_>, r: Val<'_>, span: Span) -> Result<f64, Unknown> {
    let (Val::Num(a), Val::Num(b)) = (l, r) else {
        return Err(Unknown { reason: Reason::NeedsNumbers(l.val_type(), r.val_type()), span });
    };
    let n = match op {
        ArithOp::Add => a + b,
        ArithOp::Sub => a - b,
        ArithOp::Mul => a * b,
        ArithOp::Div | ArithOp::Rem if b == 0.0 => {
            return Err(Unknown { reason: Reason::DivisionByZero, span });
        }
        ArithOp::Div => a / b,
        // Rust's `%` on doubles keeps the sign of the dividend, as the contract asks.
        ArithOp::Rem => a % b,
    };
    Ok(n)
}

/// An operand of a comparison.
struct Operand<'a> {
    /// Its value, or why it is unknown.
    value: Res<'a>,
    /// True when the operand is itself a path that is absent: only then does `== null` hold.
    absent: bool,
}

/// Evaluates a comparison operand. An unknown that merely stems from an absent path deeper down
/// (`payload.x + 1`, `(payload.x > 1)`) is not absent: it stays unknown, even for `== null`.
fn operand<'a>(node: &'a Node, facts: &Facts<'a>) -> Operand<'a> {
    let value = value(node, facts);
    let absent = matches!(node, Node::Path(..)) && matches!(value, Err(Unknown { reason: Reason::Missing, .. }));
    Operand { value, absent }
}

/// `path op constant` in a boolean position; the same rules as [`compare`].
fn compare_path_to_constant(
    op: CmpOp,
    path: &Path,
    path_span: Span,
    constant: &Const,
    span: Span,
    facts: &Facts<'_>,
) -> Truth {
    let as_truth = |b: bool| if b { Truth::True } else { Truth::False };
    let constant = Val::from_const(constant);
    let Some(value) = resolve(path, facts.event) else {
        return match (op, constant) {
            (CmpOp::Eq, Val::Null) => Truth::True,
            (CmpOp::Ne, Val::Null) => Truth::False,
            _ => Truth::Unknown(Unknown { reason: Reason::Missing, span: path_span }),
        };
    };
    match (op, value, constant) {
        (CmpOp::Eq, _, _) => as_truth(values_equal(value, constant)),
        (CmpOp::Ne, _, _) => as_truth(!values_equal(value, constant)),
        (CmpOp::Gt, Val::Num(a), Val::Num(b)) => as_truth(a > b),
        (CmpOp::Ge, Val::Num(a), Val::Num(b)) => as_truth(a >= b),
        (CmpOp::Lt, Val::Num(a), Val::Num(b)) => as_truth(a < b),
        (CmpOp::Le, Val::Num(a), Val::Num(b)) => as_truth(a <= b),
        _ => Truth::Unknown(Unknown { reason: Reason::NeedsNumbers(value.val_type(), constant.val_type()), span }),
    }
}

fn compare<'a>(op: CmpOp, l: Operand<'a>, r: Operand<'a>, span: Span) -> Res<'a> {
    if matches!(op, CmpOp::Eq | CmpOp::Ne) {
        // A missing value equals null: `payload.x == null` asks "absent or null?".
        let null_check = (l.absent && r.value == Ok(Val::Null)) || (r.absent && l.value == Ok(Val::Null));
        if null_check {
            return Ok(Val::Bool(op == CmpOp::Eq));
        }
        let equal = values_equal(l.value?, r.value?);
        return Ok(Val::Bool(equal == (op == CmpOp::Eq)));
    }
    let (l, r) = (l.value?, r.value?);
    let (Val::Num(a), Val::Num(b)) = (l, r) else {
        return Err(Unknown { reason: Reason::NeedsNumbers(l.val_type(), r.val_type()), span });
    };
    Ok(Val::Bool(match op {
        CmpOp::Gt => a > b,
        CmpOp::Ge => a >= b,
        CmpOp::Lt => a < b,
        _ => a <= b,
    }))
}

fn contains<'a>(haystack: Val<'a>, needle: Val<'a>, span: Span) -> Res<'a> {
    match haystack {
        Val::Str(_) | Val::Folded(..) => {
            let found = with_text(haystack, |h| with_text(needle, |n| h.contains(n)));
            found.flatten().map(Val::Bool).ok_or(Unknown { reason: Reason::NeedleNotString(needle.val_type()), span })
        }
        Val::Array(items) => Ok(Val::Bool(items.iter().any(|item| values_equal(Val::from_json(item), needle)))),
        other => Err(Unknown { reason: Reason::NotSearchable(other.val_type()), span }),
    }
}

/// `==` on present values: numbers within [`EQUALITY_TOLERANCE`], numeric strings as numbers,
/// arrays and objects element-wise; different types are simply not equal.
pub fn values_equal(a: Val<'_>, b: Val<'_>) -> bool {
    match (a, b) {
        (Val::Num(x), Val::Num(y)) => numbers_equal(x, y),
        // Folding never changes whether a string is a number, nor which (`1E3` is `1e3`).
        (Val::Num(x), Val::Str(s) | Val::Folded(s, _)) | (Val::Str(s) | Val::Folded(s, _), Val::Num(x)) => {
            json_number(s).is_some_and(|y| numbers_equal(x, y))
        }
        (Val::Str(x), Val::Str(y)) => x == y,
        (Val::Str(_) | Val::Folded(..), Val::Str(_) | Val::Folded(..)) => {
            with_text(a, |x| with_text(b, |y| x == y)).flatten().unwrap_or(false)
        }
        (Val::Bool(x), Val::Bool(y)) => x == y,
        (Val::Null, Val::Null) => true,
        (Val::Array(x), Val::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| values_equal(Val::from_json(p), Val::from_json(q)))
        }
        (Val::Object(x), Val::Object(y)) => {
            x.len() == y.len()
                && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| values_equal(Val::from_json(v), Val::from_json(w))))
        }
        _ => false,
    }
}

fn numbers_equal(x: f64, y: f64) -> bool {
    x == y || (x - y).abs() < EQUALITY_TOLERANCE
}

/// Reads a string that is exactly a JSON number (`-12.5e3`); nothing else (` 12`, `inf`, `0x1`).
pub fn json_number(s: &str) -> Option<f64> {
    let b = s.as_bytes();
    let mut i = 0;
    let digits = |i: &mut usize| {
        let start = *i;
        while b.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
        }
        *i - start
    };
    if b.first() == Some(&b'-') {
        i += 1;
    }
    match b.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => {
            digits(&mut i);
        }
        _ => return None,
    }
    if b.get(i) == Some(&b'.') {
        i += 1;
        if digits(&mut i) == 0 {
            return None;
        }
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return None;
        }
    }
    if i != b.len() {
        return None;
    }
    s.parse().ok()
}
