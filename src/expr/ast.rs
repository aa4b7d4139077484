//! The syntax tree of an expression, and how it prints back as text.

use std::fmt;

/// A byte range in the expression text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    /// First byte.
    pub start: u32,
    /// One past the last byte.
    pub end: u32,
}

impl Span {
    /// A span from byte offsets (expressions longer than 4 GiB are cut short by the rules loader).
    pub fn new(start: usize, end: usize) -> Self {
        let clamp = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        Span { start: clamp(start), end: clamp(end) }
    }

    /// The smallest span covering both.
    pub fn to(self, other: Span) -> Span {
        Span { start: self.start.min(other.start), end: self.end.max(other.end) }
    }

    /// The text under the span (empty when the span does not fit `src`).
    pub fn text(self, src: &str) -> &str {
        src.get(self.start as usize..self.end as usize).unwrap_or("")
    }

    /// 1-based line, and column in characters within that line, of the span's start in `src`.
    ///
    /// ```
    /// use fluxflow::expr::Span;
    /// assert_eq!(Span { start: 4, end: 5 }.line_col("a ==\n (b"), (1, 5));
    /// assert_eq!(Span { start: 6, end: 7 }.line_col("a ==\n (b"), (2, 2));
    /// ```
    pub fn line_col(self, src: &str) -> (usize, usize) {
        let before = src.get(..self.start as usize).unwrap_or("");
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        (line, col)
    }

    /// Where the span starts in `src`, in words: `column C`, or `line L, column C` when `src`
    /// has more than one line.
    pub fn place(self, src: &str) -> String {
        match self.line_col(src) {
            (1, col) if !src.contains('\n') => format!("column {col}"),
            (line, col) => format!("line {line}, column {col}"),
        }
    }
}

/// Where a path starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Root {
    /// `payload`.
    Payload,
    /// `meta`.
    Meta,
    /// `event`.
    Event,
    /// `member`: the actor's state before the event.
    Member,
    /// `original`: the event a reversal takes back (only in the `ratio` of `reverse_points`).
    Original,
}

/// One step of a payload path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// `.key` or `["key"]`.
    Key(String),
    /// `[3]`.
    Index(usize),
}

/// The fields of the event envelope that `event.` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventField {
    /// `event.id`.
    Id,
    /// `event.type`.
    Type,
    /// `event.source`.
    Source,
    /// `event.actor_id`.
    ActorId,
}

impl EventField {
    fn name(self) -> &'static str {
        match self {
            EventField::Id => "id",
            EventField::Type => "type",
            EventField::Source => "source",
            EventField::ActorId => "actor_id",
        }
    }
}

/// A path into the event, checked: `meta` takes one key, `event` one of its four fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Path {
    /// `payload` followed by any steps.
    Payload(Vec<Segment>),
    /// `meta.key`.
    Meta(String),
    /// `meta` with other steps than one key (`meta.tier.level`, `meta`): meta values are
    /// strings, so such a path never has a value. The original loads it (it is never found), so
    /// it loads here too, with a warning from the compiler.
    MetaNeverPresent(Vec<Segment>),
    /// `event.type` and friends.
    Event(EventField),
    /// `member.balance`, `member.pending`, `member.tier`: the actor's points before the event.
    Member(MemberField),
    /// `original.payload...`, `original.id`, `original.type`, `original.actor_id`: a path into
    /// the event a reversal takes back.
    Original(Box<Path>),
}

/// A value of the member's points that expressions read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberField {
    /// `member.balance`: spendable points.
    Balance,
    /// `member.pending`: points awarded but not spendable yet.
    Pending,
    /// `member.tier`: the tier's id, or `null`.
    Tier,
}

impl MemberField {
    /// The field's name after `member.`.
    pub fn name(self) -> &'static str {
        match self {
            MemberField::Balance => "balance",
            MemberField::Pending => "pending",
            MemberField::Tier => "tier",
        }
    }
}

/// What `original` may be followed by: what is stored of an event.
const ORIGINAL_FIELDS: &str =
    "original has the fields original.payload..., original.id, original.type and original.actor_id";

impl Path {
    /// Checks the steps that follow a root; the error says what is allowed.
    pub fn new(root: Root, mut segments: Vec<Segment>) -> Result<Path, String> {
        match root {
            Root::Payload => Ok(Path::Payload(segments)),
            Root::Meta => match segments.as_slice() {
                [Segment::Key(_)] => match segments.pop() {
                    Some(Segment::Key(key)) => Ok(Path::Meta(key)),
                    _ => Ok(Path::MetaNeverPresent(segments)),
                },
                _ => Ok(Path::MetaNeverPresent(segments)),
            },
            Root::Member => match segments.as_slice() {
                [Segment::Key(k)] if k == "balance" => Ok(Path::Member(MemberField::Balance)),
                [Segment::Key(k)] if k == "pending" => Ok(Path::Member(MemberField::Pending)),
                [Segment::Key(k)] if k == "tier" => Ok(Path::Member(MemberField::Tier)),
                _ => Err("member has the fields member.balance, member.pending and member.tier (the actor's points before the event)".into()),
            },
            Root::Original => match segments.split_first() {
                Some((Segment::Key(k), rest)) if k == "payload" => {
                    Ok(Path::Original(Box::new(Path::Payload(rest.to_vec()))))
                }
                Some((Segment::Key(_), [])) => match Path::new(Root::Event, segments)? {
                    Path::Event(EventField::Source) => Err(ORIGINAL_FIELDS.into()),
                    event => Ok(Path::Original(Box::new(event))),
                },
                _ => Err(ORIGINAL_FIELDS.into()),
            },
            Root::Event => {
                let field = match segments.as_slice() {
                    [Segment::Key(k)] => match k.as_str() {
                        "id" => Some(EventField::Id),
                        "type" => Some(EventField::Type),
                        "source" => Some(EventField::Source),
                        "actor_id" => Some(EventField::ActorId),
                        _ => None,
                    },
                    _ => None,
                };
                field
                    .map(Path::Event)
                    .ok_or_else(|| "event has the fields event.id, event.type, event.source and event.actor_id".into())
            }
        }
    }
}

fn write_key(f: &mut fmt::Formatter<'_>, key: &str) -> fmt::Result {
    let plain = key.bytes().next().is_some() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if plain {
        write!(f, ".{key}")
    } else {
        write!(f, "[")?;
        write_string(f, key)?;
        write!(f, "]")
    }
}

/// Writes a string literal that the lexer reads back as the same string.
fn write_string(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    write!(f, "\"")?;
    let bytes = s.as_bytes();
    for (i, c) in s.char_indices() {
        match c {
            '"' => write!(f, "\\\"")?,
            // A backslash is kept as is unless the lexer would read it as an escape.
            '\\' if matches!(bytes.get(i + 1), Some(b'"' | b'\'' | b'\\') | None) => write!(f, "\\\\")?,
            c => write!(f, "{c}")?,
        }
    }
    write!(f, "\"")
}

fn write_segments(f: &mut fmt::Formatter<'_>, segments: &[Segment]) -> fmt::Result {
    for segment in segments {
        match segment {
            Segment::Key(k) => write_key(f, k)?,
            Segment::Index(i) => write!(f, "[{i}]")?,
        }
    }
    Ok(())
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Path::Payload(segments) => {
                write!(f, "payload")?;
                write_segments(f, segments)
            }
            Path::MetaNeverPresent(segments) => {
                write!(f, "meta")?;
                write_segments(f, segments)
            }
            Path::Meta(key) => {
                write!(f, "meta")?;
                write_key(f, key)
            }
            Path::Event(field) => write!(f, "event.{}", field.name()),
            Path::Member(field) => write!(f, "member.{}", field.name()),
            Path::Original(path) => write!(f, "original.{path}"),
        }
    }
}

/// A literal value.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    /// A number.
    Number(f64),
    /// A string.
    Str(String),
    /// `true` or `false`.
    Bool(bool),
    /// `null`.
    Null,
    /// `[a, b, ...]`: literals only, nested arrays allowed.
    Array(Vec<Literal>),
}

impl fmt::Display for Literal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Literal::Number(n) => write!(f, "{n}"),
            Literal::Str(s) => write_string(f, s),
            Literal::Bool(b) => write!(f, "{b}"),
            Literal::Null => write!(f, "null"),
            Literal::Array(items) => {
                write!(f, "[")?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        write!(f, ", ")?;
                    }
                    write!(f, "{item}")?;
                }
                write!(f, "]")
            }
        }
    }
}

/// Operators with two operands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryOp {
    /// `OR`.
    Or,
    /// `AND`.
    And,
    /// `==`.
    Eq,
    /// `!=`.
    Ne,
    /// `>`.
    Gt,
    /// `>=`.
    Ge,
    /// `<`.
    Lt,
    /// `<=`.
    Le,
    /// `contains`.
    Contains,
    /// `matches`.
    Matches,
    /// `in`: membership in an array.
    In,
    /// `not in`.
    NotIn,
    /// `+`.
    Add,
    /// `-`.
    Sub,
    /// `*`.
    Mul,
    /// `/`.
    Div,
    /// `%`.
    Rem,
}

impl BinaryOp {
    /// How tightly the operator binds: higher binds tighter.
    pub fn precedence(self) -> u8 {
        match self {
            BinaryOp::Or => 1,
            BinaryOp::And => 2,
            BinaryOp::Eq
            | BinaryOp::Ne
            | BinaryOp::Gt
            | BinaryOp::Ge
            | BinaryOp::Lt
            | BinaryOp::Le
            | BinaryOp::Contains
            | BinaryOp::Matches
            | BinaryOp::In
            | BinaryOp::NotIn => 4,
            BinaryOp::Add | BinaryOp::Sub => 5,
            BinaryOp::Mul | BinaryOp::Div | BinaryOp::Rem => 6,
        }
    }

    /// The operator as written.
    pub fn symbol(self) -> &'static str {
        match self {
            BinaryOp::Or => "OR",
            BinaryOp::And => "AND",
            BinaryOp::Eq => "==",
            BinaryOp::Ne => "!=",
            BinaryOp::Gt => ">",
            BinaryOp::Ge => ">=",
            BinaryOp::Lt => "<",
            BinaryOp::Le => "<=",
            BinaryOp::Contains => "contains",
            BinaryOp::Matches => "matches",
            BinaryOp::In => "in",
            BinaryOp::NotIn => "not in",
            BinaryOp::Add => "+",
            BinaryOp::Sub => "-",
            BinaryOp::Mul => "*",
            BinaryOp::Div => "/",
            BinaryOp::Rem => "%",
        }
    }

    /// True for `== != > >= < <= contains matches in` and `not in`.
    pub fn is_comparison(self) -> bool {
        self.precedence() == 4
    }
}

/// Precedence of `NOT`: looser than comparisons, tighter than `AND`.
pub const NOT_PRECEDENCE: u8 = 3;
/// Precedence of unary minus: tighter than everything.
pub const NEG_PRECEDENCE: u8 = 7;

/// Operators with one operand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnaryOp {
    /// `NOT`.
    Not,
    /// `-`.
    Neg,
}

/// A function of the expression language: `name(arguments)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    /// `day_of_week()`: `'mon'`..`'sun'`, the local day of the event time.
    DayOfWeek,
    /// `hour()`: 0–23, the local hour of the event time.
    Hour,
    /// `abs(x)`.
    Abs,
    /// `round(x)`: half away from zero.
    Round,
    /// `floor(x)`.
    Floor,
    /// `ceil(x)`.
    Ceil,
    /// `min(a, b, ...)`.
    Min,
    /// `max(a, b, ...)`.
    Max,
    /// `len(x)`: characters of a string, elements of an array, keys of an object.
    Len,
    /// `lower(x)`: the string in lower case.
    Lower,
    /// `upper(x)`: the string in upper case.
    Upper,
    /// `count('type', 'period')`: the actor's events of the type in the period.
    Count,
    /// `sum('type', 'path', 'period')`: a numeric path summed over those events.
    Sum,
    /// `first('type')`: this is the actor's first event of the type.
    First,
    /// `streak('type', 'day' | 'week')`: consecutive periods with an event of the type.
    Streak,
    /// `days_since('type')`: whole days since the actor's previous event of the type.
    DaysSince,
}

impl Function {
    /// True for the functions that read the actor's earlier events.
    pub fn reads_member(self) -> bool {
        matches!(self, Function::Count | Function::Sum | Function::First | Function::Streak | Function::DaysSince)
    }

    /// Every function, in the order the docs list them.
    pub const ALL: [Function; 16] = [
        Function::Count,
        Function::Sum,
        Function::First,
        Function::Streak,
        Function::DaysSince,
        Function::DayOfWeek,
        Function::Hour,
        Function::Lower,
        Function::Upper,
        Function::Len,
        Function::Abs,
        Function::Min,
        Function::Max,
        Function::Round,
        Function::Floor,
        Function::Ceil,
    ];

    /// The name as written.
    pub fn name(self) -> &'static str {
        match self {
            Function::DayOfWeek => "day_of_week",
            Function::Hour => "hour",
            Function::Abs => "abs",
            Function::Round => "round",
            Function::Floor => "floor",
            Function::Ceil => "ceil",
            Function::Min => "min",
            Function::Max => "max",
            Function::Len => "len",
            Function::Lower => "lower",
            Function::Upper => "upper",
            Function::Count => "count",
            Function::Sum => "sum",
            Function::First => "first",
            Function::Streak => "streak",
            Function::DaysSince => "days_since",
        }
    }

    /// The function of a name, in any case.
    pub fn parse(name: &str) -> Option<Function> {
        Function::ALL.into_iter().find(|f| f.name().eq_ignore_ascii_case(name))
    }

    /// How many arguments it takes: at least, at most.
    pub fn arity(self) -> (usize, usize) {
        match self {
            Function::DayOfWeek | Function::Hour => (0, 0),
            Function::Min | Function::Max => (2, usize::MAX),
            Function::Count | Function::Streak => (2, 2),
            Function::Sum => (3, 3),
            _ => (1, 1),
        }
    }
}

/// An expression node.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// A literal.
    Literal(Literal, Span),
    /// A path.
    Path(Path, Span),
    /// `NOT x` or `-x`.
    Unary(UnaryOp, Box<Expr>, Span),
    /// `a op b`.
    Binary(BinaryOp, Box<Expr>, Box<Expr>, Span),
    /// `name(arguments)`.
    Call(Function, Vec<Expr>, Span),
}

impl Expr {
    /// Where the node stands in the source.
    pub fn span(&self) -> Span {
        match self {
            Expr::Literal(_, s)
            | Expr::Path(_, s)
            | Expr::Unary(_, _, s)
            | Expr::Binary(_, _, _, s)
            | Expr::Call(_, _, s) => *s,
        }
    }

    fn precedence(&self) -> u8 {
        match self {
            Expr::Literal(..) | Expr::Path(..) | Expr::Call(..) => u8::MAX,
            Expr::Unary(UnaryOp::Not, ..) => NOT_PRECEDENCE,
            Expr::Unary(UnaryOp::Neg, ..) => NEG_PRECEDENCE,
            Expr::Binary(op, ..) => op.precedence(),
        }
    }

    /// A fully parenthesised form without positions, for comparing trees in tests.
    pub fn to_sexpr(&self) -> String {
        match self {
            Expr::Literal(Literal::Number(n), _) => format!("{n:?}"),
            Expr::Literal(Literal::Str(s), _) => format!("{s:?}"),
            Expr::Literal(Literal::Bool(b), _) => b.to_string(),
            Expr::Literal(Literal::Null, _) => "null".into(),
            Expr::Literal(Literal::Array(items), _) => {
                let items: Vec<String> =
                    items.iter().map(|i| Expr::Literal(i.clone(), Span::default()).to_sexpr()).collect();
                format!("[{}]", items.join(" "))
            }
            Expr::Path(p, _) => p.to_string(),
            Expr::Unary(UnaryOp::Not, e, _) => format!("(NOT {})", e.to_sexpr()),
            Expr::Unary(UnaryOp::Neg, e, _) => format!("(- {})", e.to_sexpr()),
            Expr::Binary(op, l, r, _) => format!("({} {} {})", op.symbol(), l.to_sexpr(), r.to_sexpr()),
            Expr::Call(function, args, _) => {
                let args: Vec<String> = args.iter().map(Expr::to_sexpr).collect();
                format!("({}{}{})", function.name(), if args.is_empty() { "" } else { " " }, args.join(" "))
            }
        }
    }
}

/// Prints with the fewest parentheses that parse back to the same tree.
impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let operand = |f: &mut fmt::Formatter<'_>, e: &Expr, needs_parens: bool| {
            if needs_parens { write!(f, "({e})") } else { write!(f, "{e}") }
        };
        match self {
            Expr::Literal(literal, _) => write!(f, "{literal}"),
            Expr::Path(p, _) => write!(f, "{p}"),
            Expr::Unary(UnaryOp::Not, e, _) => {
                write!(f, "NOT ")?;
                operand(f, e, e.precedence() < NOT_PRECEDENCE)
            }
            Expr::Unary(UnaryOp::Neg, e, _) => {
                write!(f, "-")?;
                operand(f, e, e.precedence() < NEG_PRECEDENCE)
            }
            Expr::Binary(op, l, r, _) => {
                let p = op.precedence();
                // Left-associative: the left side may share our level, the right may not.
                // Comparisons do not chain, so neither side may be a comparison.
                let left_parens = l.precedence() < p || (op.is_comparison() && l.precedence() == p);
                operand(f, l, left_parens)?;
                write!(f, " {} ", op.symbol())?;
                operand(f, r, r.precedence() <= p)
            }
            Expr::Call(function, args, _) => {
                write!(f, "{}(", function.name())?;
                for (i, arg) in args.iter().enumerate() {
                    if i > 0 {
                        write!(f, ", ")?;
                    }
                    write!(f, "{arg}")?;
                }
                write!(f, ")")
            }
        }
    }
}
