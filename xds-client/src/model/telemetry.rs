//! Telemetry settings of connection managers and TCP proxies: the access log
//! (`access_log`: Envoy's file logger, with a CEL `ExpressionFilter`) and tracing (`tracing`:
//! sampling and an OpenTelemetry collector cluster), as a control plane sets them from Istio's
//! Telemetry API.
//!
//! Filters: the subset of CEL Istio's documented access-log filters use — comparisons of
//! `response.code` with an integer (`==`, `!=`, `<`, `<=`, `>`, `>=`), `true`, `false`, `!`,
//! `&&`, `||` and parentheses. Anything else is refused (the listener is NACKed with the
//! reason). The control plane checks the same subset when it loads a Telemetry.

use serde::Serialize;

/// One access logger of a connection manager or TCP proxy: a line for every request (or
/// connection) its filter passes, written to the proxy's access-log sink.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AccessLogger {
    /// The filter; `None`: every request.
    pub filter: Option<Expr>,
}

/// Tracing of a connection manager.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TracingConfig {
    /// Percentage of requests sampled when no upstream decision came with them; `None`: the
    /// proxy's own setting.
    pub sampling: Option<f64>,
    /// The OpenTelemetry collector's cluster (spans go to one of its endpoints); `None`: the
    /// proxy's own collector, if any.
    pub collector: Option<String>,
}

/// Whether a request with `code` gets a line from `loggers`: with none configured, always
/// (the proxy's own default); otherwise when one of them passes it.
pub fn should_log(loggers: &[AccessLogger], code: u16) -> bool {
    loggers.is_empty()
        || loggers
            .iter()
            .any(|l| l.filter.as_ref().is_none_or(|f| f.eval(code)))
}

/// A parsed filter expression.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum Expr {
    /// `true` or `false`.
    Const(bool),
    /// `response.code OP value`.
    Code(CmpOp, i64),
    /// `!e`.
    Not(Box<Expr>),
    /// `a && b`.
    And(Box<Expr>, Box<Expr>),
    /// `a || b`.
    Or(Box<Expr>, Box<Expr>),
}

impl Expr {
    /// The expression's value for a response code (0: no response).
    pub fn eval(&self, code: u16) -> bool {
        self.value(i64::from(code))
    }

    fn value(&self, code: i64) -> bool {
        match self {
            Expr::Const(b) => *b,
            Expr::Code(op, v) => match op {
                CmpOp::Eq => code == *v,
                CmpOp::Ne => code != *v,
                CmpOp::Lt => code < *v,
                CmpOp::Le => code <= *v,
                CmpOp::Gt => code > *v,
                CmpOp::Ge => code >= *v,
            },
            Expr::Not(e) => !e.value(code),
            Expr::And(a, b) => a.value(code) && b.value(code),
            Expr::Or(a, b) => a.value(code) || b.value(code),
        }
    }
}

/// A comparison operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum CmpOp {
    /// `==`.
    Eq,
    /// `!=`.
    Ne,
    /// `<`.
    Lt,
    /// `<=`.
    Le,
    /// `>`.
    Gt,
    /// `>=`.
    Ge,
}

/// Why an expression is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Nothing to parse.
    #[error("the expression is empty")]
    Empty,
    /// An attribute other than `response.code`.
    #[error("attribute `{0}` is not supported (only response.code)")]
    Attribute(String),
    /// A token that does not fit where it stands.
    #[error("unexpected `{0}`")]
    Unexpected(String),
    /// The expression ends too early.
    #[error("unexpected end of the expression")]
    End,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Tok {
    Ident(String),
    Int(i64),
    Str(String),
    Op(&'static str),
}

fn lex(s: &str) -> Result<Vec<Tok>, ParseError> {
    const OPS: [&str; 12] = [
        "==", "!=", "<=", ">=", "&&", "||", "<", ">", "!", "(", ")", "-",
    ];
    let mut out = Vec::new();
    let mut rest = s.trim_start();
    while !rest.is_empty() {
        if let Some(op) = OPS.iter().find(|op| rest.starts_with(**op)) {
            out.push(Tok::Op(op));
            rest = &rest[op.len()..];
        } else if rest.starts_with(|c: char| c.is_ascii_digit()) {
            let end = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            let n = rest[..end]
                .parse()
                .map_err(|_| ParseError::Unexpected(rest[..end].to_string()))?;
            out.push(Tok::Int(n));
            rest = &rest[end..];
        } else if rest.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
                .unwrap_or(rest.len());
            out.push(Tok::Ident(rest[..end].to_string()));
            rest = &rest[end..];
        } else if let Some(q) = rest.chars().next().filter(|c| *c == '\'' || *c == '"') {
            // A string literal: no supported comparison takes one; kept as a token so that
            // the parser names what it does not support.
            let end = rest[1..].find(q).map_or(rest.len(), |e| e + 2);
            out.push(Tok::Str(rest[..end].to_string()));
            rest = &rest[end..];
        } else {
            let c = rest.chars().next().unwrap_or(' ');
            return Err(ParseError::Unexpected(c.to_string()));
        }
        rest = rest.trim_start();
    }
    Ok(out)
}

struct Parser {
    toks: Vec<Tok>,
    at: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.at)
    }

    fn next(&mut self) -> Result<Tok, ParseError> {
        let t = self.toks.get(self.at).cloned().ok_or(ParseError::End)?;
        self.at += 1;
        Ok(t)
    }

    fn eat(&mut self, op: &str) -> bool {
        if self.peek() == Some(&Tok::Op(static_op(op))) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn or(&mut self) -> Result<Expr, ParseError> {
        let mut e = self.and()?;
        while self.eat("||") {
            e = Expr::Or(Box::new(e), Box::new(self.and()?));
        }
        Ok(e)
    }

    fn and(&mut self) -> Result<Expr, ParseError> {
        let mut e = self.unary()?;
        while self.eat("&&") {
            e = Expr::And(Box::new(e), Box::new(self.unary()?));
        }
        Ok(e)
    }

    fn unary(&mut self) -> Result<Expr, ParseError> {
        if self.eat("!") {
            return Ok(Expr::Not(Box::new(self.unary()?)));
        }
        if self.eat("(") {
            let e = self.or()?;
            return match self.next()? {
                Tok::Op(")") => Ok(e),
                other => Err(unexpected(&other)),
            };
        }
        match self.next()? {
            Tok::Ident(i) if i == "true" => Ok(Expr::Const(true)),
            Tok::Ident(i) if i == "false" => Ok(Expr::Const(false)),
            Tok::Ident(i) if i == "response.code" => {
                let op = match self.next()? {
                    Tok::Op("==") => CmpOp::Eq,
                    Tok::Op("!=") => CmpOp::Ne,
                    Tok::Op("<") => CmpOp::Lt,
                    Tok::Op("<=") => CmpOp::Le,
                    Tok::Op(">") => CmpOp::Gt,
                    Tok::Op(">=") => CmpOp::Ge,
                    other => return Err(unexpected(&other)),
                };
                let negative = self.eat("-");
                match self.next()? {
                    Tok::Int(n) => Ok(Expr::Code(op, if negative { -n } else { n })),
                    other => Err(unexpected(&other)),
                }
            }
            Tok::Ident(i) => Err(ParseError::Attribute(i)),
            other => Err(unexpected(&other)),
        }
    }
}

fn static_op(op: &str) -> &'static str {
    match op {
        "||" => "||",
        "&&" => "&&",
        "!" => "!",
        "(" => "(",
        "-" => "-",
        _ => ")",
    }
}

fn unexpected(t: &Tok) -> ParseError {
    ParseError::Unexpected(match t {
        Tok::Ident(s) | Tok::Str(s) => s.clone(),
        Tok::Int(n) => n.to_string(),
        Tok::Op(o) => (*o).to_string(),
    })
}

/// Parses an access-log filter expression (CEL, the subset above).
pub fn parse(expression: &str) -> Result<Expr, ParseError> {
    let toks = lex(expression)?;
    if toks.is_empty() {
        return Err(ParseError::Empty);
    }
    let mut p = Parser { toks, at: 0 };
    let e = p.or()?;
    match p.peek() {
        None => Ok(e),
        Some(t) => Err(unexpected(t)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_evaluate_on_the_response_code() {
        let f = parse("response.code >= 400").unwrap();
        assert!(f.eval(403) && f.eval(503) && !f.eval(200) && !f.eval(0));
        let g = parse("!(response.code < 400) && response.code != 404 || false").unwrap();
        assert!(g.eval(500) && !g.eval(404) && !g.eval(200));
        assert!(!parse("false").unwrap().eval(500));
        assert!(matches!(
            parse("request.path == '/x'"),
            Err(ParseError::Attribute(a)) if a == "request.path"
        ));
        let off = [AccessLogger {
            filter: Some(Expr::Const(false)),
        }];
        assert!(!should_log(&off, 200));
        assert!(should_log(&[], 200));
    }

    #[test]
    fn the_documented_forms_parse_and_others_are_refused_with_a_reason() {
        assert_eq!(
            parse("response.code >= 400"),
            Ok(Expr::Code(CmpOp::Ge, 400))
        );
        assert_eq!(
            parse("!(response.code < 400) || false"),
            Ok(Expr::Or(
                Box::new(Expr::Not(Box::new(Expr::Code(CmpOp::Lt, 400)))),
                Box::new(Expr::Const(false))
            ))
        );
        assert!(parse("response.code == 200 && response.code != 201").is_ok());
        assert_eq!(
            parse("request.url_path.startsWith('/x')"),
            Err(ParseError::Attribute("request.url_path.startsWith".into()))
        );
        assert_eq!(parse(""), Err(ParseError::Empty));
        assert_eq!(parse("response.code >="), Err(ParseError::End));
        assert_eq!(
            parse("response.code >= 400 400"),
            Err(ParseError::Unexpected("400".into()))
        );
        assert_eq!(
            parse("response.code = 1"),
            Err(ParseError::Unexpected("=".into()))
        );
    }
}
