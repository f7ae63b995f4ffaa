//! `access_log` entries (HTTP connection manager, `tcp_proxy`) into compiled
//! [`AccessLog`]s: the logger's sink and format, and its filter.

use std::sync::Arc;

use layer8_xds::pb::envoy::config::accesslog::v3 as pb;
use layer8_xds::pb::envoy::config::core::v3::{data_source, SubstitutionFormatString};
use layer8_xds::pb::ext::envoy::extensions::access_loggers::file::v3::{
    file_access_log::AccessLogFormat as FileFormat, FileAccessLog,
};
use layer8_xds::pb::ext::envoy::extensions::access_loggers::stream::v3::{
    stderr_access_log, stdout_access_log, StderrAccessLog, StdoutAccessLog,
};
use layer8_xds::pb::google::protobuf::Struct;

use super::{ConfigError, Ctx, Notes};
use crate::access_log::filter::{Compare, Filter};
use crate::access_log::format::{self, Format, FormatError};
use crate::access_log::{sink::Sink, AccessLog, AccessLogs, Flags};

/// Compile a list of `access_log` entries. Loggers layer8 does not have (gRPC, OpenTelemetry,
/// Wasm) are skipped with a note; a bad format or an unopenable file rejects the resource.
pub(super) fn translate(
    logs: &[pb::AccessLog],
    ctx: &Ctx,
    notes: &mut Notes,
) -> Result<Arc<AccessLogs>, ConfigError> {
    let mut out = Vec::new();
    for (i, log) in logs.iter().enumerate() {
        let ctx = ctx.at(format!("access_log[{i}]"));
        let Some(pb::access_log::ConfigType::TypedConfig(any)) = &log.config_type else {
            notes.skip(
                &ctx,
                format!("access log '{}' without typed_config", log.name),
            );
            continue;
        };
        let tctx = ctx.at("typed_config");
        let ty = any.type_url.rsplit('/').next().unwrap_or_default();
        let (path, format) = match ty {
            "envoy.extensions.access_loggers.file.v3.FileAccessLog" => {
                let f: FileAccessLog = any.to_msg().map_err(|e| tctx.err(e.to_string()))?;
                if f.path.is_empty() {
                    return Err(tctx.at("path").err("must not be empty"));
                }
                #[allow(deprecated)]
                let format = match &f.access_log_format {
                    None => text(format::DEFAULT_TEXT, &tctx)?,
                    Some(FileFormat::Format(s)) if s.is_empty() => {
                        text(format::DEFAULT_TEXT, &tctx)?
                    }
                    Some(FileFormat::Format(s)) => text(s, &tctx.at("format"))?,
                    Some(FileFormat::JsonFormat(s)) => {
                        json(s, false, true, &tctx.at("json_format"))?
                    }
                    Some(FileFormat::TypedJsonFormat(s)) => {
                        json(s, false, false, &tctx.at("typed_json_format"))?
                    }
                    Some(FileFormat::LogFormat(s)) => {
                        substitution(s, &tctx.at("log_format"), notes)?
                    }
                };
                (f.path, format)
            }
            "envoy.extensions.access_loggers.stream.v3.StdoutAccessLog" => {
                let f: StdoutAccessLog = any.to_msg().map_err(|e| tctx.err(e.to_string()))?;
                let format = match &f.access_log_format {
                    Some(stdout_access_log::AccessLogFormat::LogFormat(s)) => {
                        substitution(s, &tctx.at("log_format"), notes)?
                    }
                    None => text(format::DEFAULT_TEXT, &tctx)?,
                };
                ("/dev/stdout".to_string(), format)
            }
            "envoy.extensions.access_loggers.stream.v3.StderrAccessLog" => {
                let f: StderrAccessLog = any.to_msg().map_err(|e| tctx.err(e.to_string()))?;
                let format = match &f.access_log_format {
                    Some(stderr_access_log::AccessLogFormat::LogFormat(s)) => {
                        substitution(s, &tctx.at("log_format"), notes)?
                    }
                    None => text(format::DEFAULT_TEXT, &tctx)?,
                };
                ("/dev/stderr".to_string(), format)
            }
            other => {
                notes.skip(
                    &ctx,
                    format!(
                        "access log '{}' ({other}) not written: layer8 writes file, stdout and \
                         stderr access logs",
                        log.name
                    ),
                );
                continue;
            }
        };
        if log.filter.as_ref().is_some_and(|f| !supported(f)) {
            notes.skip(
                &ctx.at("filter"),
                format!(
                    "access log '{}' not written: its filter uses metadata, log type or \
                     extension filters",
                    log.name
                ),
            );
            continue;
        }
        let filter = log
            .filter
            .as_ref()
            .map(|f| filter(f, &ctx.at("filter")))
            .transpose()?;
        let sink = Sink::open(&path)
            .map_err(|e| tctx.at("path").err(format!("cannot open '{path}': {e}")))?;
        if let Format::Text(pieces) = &format {
            if format::has_unavailable(pieces) {
                notes.skip(
                    &tctx,
                    "the format uses operators layer8 does not record: they print '-'",
                );
            }
        }
        out.push(AccessLog {
            filter,
            format,
            sink,
        });
    }
    Ok(Arc::new(AccessLogs::new(out)))
}

fn format_err(ctx: &Ctx, e: FormatError) -> ConfigError {
    ctx.err(e.to_string())
}

fn text(s: &str, ctx: &Ctx) -> Result<Format, ConfigError> {
    Ok(Format::Text(
        format::parse(s).map_err(|e| format_err(ctx, e))?,
    ))
}

fn json(s: &Struct, omit_empty: bool, stringify: bool, ctx: &Ctx) -> Result<Format, ConfigError> {
    let serde_json::Value::Object(map) = crate::runtime::config::struct_to_json(s) else {
        return Err(ctx.err("must be an object"));
    };
    Ok(Format::Json {
        fields: format::parse_json(&map).map_err(|e| format_err(ctx, e))?,
        omit_empty,
        stringify,
    })
}

fn substitution(
    s: &SubstitutionFormatString,
    ctx: &Ctx,
    notes: &mut Notes,
) -> Result<Format, ConfigError> {
    use layer8_xds::pb::envoy::config::core::v3::substitution_format_string::Format as F;
    if !s.formatters.is_empty() {
        notes.skip(
            &ctx.at("formatters"),
            "formatter extensions are not run: their operators are rejected",
        );
    }
    #[allow(deprecated)]
    match &s.format {
        None => text(format::DEFAULT_TEXT, ctx),
        Some(F::TextFormat(t)) => text(t, &ctx.at("text_format")),
        Some(F::JsonFormat(j)) => json(j, s.omit_empty_values, false, &ctx.at("json_format")),
        Some(F::TextFormatSource(src)) => {
            let sctx = ctx.at("text_format_source");
            let t = match &src.specifier {
                Some(data_source::Specifier::InlineString(t)) => t.clone(),
                Some(data_source::Specifier::InlineBytes(b)) => {
                    String::from_utf8(b.clone()).map_err(|_| sctx.err("not UTF-8"))?
                }
                Some(data_source::Specifier::Filename(f)) => std::fs::read_to_string(f)
                    .map_err(|e| sctx.at("filename").err(format!("cannot read '{f}': {e}")))?,
                Some(data_source::Specifier::EnvironmentVariable(v)) => {
                    std::env::var(v).map_err(|_| {
                        sctx.at("environment_variable")
                            .err(format!("'{v}' is not set"))
                    })?
                }
                None => return Err(sctx.err("a source is required")),
            };
            text(&t, &sctx)
        }
    }
}

fn compare(c: Option<&pb::ComparisonFilter>, ctx: &Ctx) -> Result<Compare, ConfigError> {
    let c = c.ok_or_else(|| ctx.at("comparison").err("required"))?;
    let v = u64::from(c.value.as_ref().map_or(0, |v| v.default_value));
    Ok(match pb::comparison_filter::Op::try_from(c.op) {
        Ok(pb::comparison_filter::Op::Eq) => Compare::Eq(v),
        Ok(pb::comparison_filter::Op::Ge) => Compare::Ge(v),
        Ok(pb::comparison_filter::Op::Le) => Compare::Le(v),
        Err(_) => return Err(ctx.at("comparison.op").err("unknown operator")),
    })
}

/// Whether layer8 evaluates every filter in this tree.
fn supported(f: &pb::AccessLogFilter) -> bool {
    use pb::access_log_filter::FilterSpecifier as S;
    match &f.filter_specifier {
        Some(S::AndFilter(a)) => a.filters.iter().all(supported),
        Some(S::OrFilter(o)) => o.filters.iter().all(supported),
        Some(
            S::StatusCodeFilter(_)
            | S::DurationFilter(_)
            | S::NotHealthCheckFilter(_)
            | S::TraceableFilter(_)
            | S::RuntimeFilter(_)
            | S::HeaderFilter(_)
            | S::ResponseFlagFilter(_)
            | S::GrpcStatusFilter(_),
        ) => true,
        _ => false,
    }
}

fn filter(f: &pb::AccessLogFilter, ctx: &Ctx) -> Result<Filter, ConfigError> {
    use pb::access_log_filter::FilterSpecifier as S;
    let list = |fs: &[pb::AccessLogFilter], ctx: &Ctx| -> Result<Vec<Filter>, ConfigError> {
        fs.iter()
            .enumerate()
            .map(|(i, f)| filter(f, &ctx.at(format!("filters[{i}]"))))
            .collect()
    };
    Ok(match &f.filter_specifier {
        Some(S::StatusCodeFilter(s)) => Filter::Status(compare(
            s.comparison.as_ref(),
            &ctx.at("status_code_filter"),
        )?),
        Some(S::DurationFilter(d)) => {
            Filter::Duration(compare(d.comparison.as_ref(), &ctx.at("duration_filter"))?)
        }
        Some(S::NotHealthCheckFilter(_)) => Filter::NotHealthCheck,
        Some(S::TraceableFilter(_)) => Filter::Traceable,
        Some(S::RuntimeFilter(r)) => {
            let p = r.percent_sampled.as_ref();
            let num = u64::from(p.map_or(0, |p| p.numerator));
            let per = match p.map_or(0, |p| p.denominator) {
                0 => 10_000,
                1 => 100,
                _ => 1,
            };
            Filter::Sample(u32::try_from((num * per).min(1_000_000)).unwrap_or(1_000_000))
        }
        Some(S::AndFilter(a)) => Filter::And(list(&a.filters, &ctx.at("and_filter"))?),
        Some(S::OrFilter(o)) => Filter::Or(list(&o.filters, &ctx.at("or_filter"))?),
        Some(S::HeaderFilter(h)) => {
            let hctx = ctx.at("header_filter.header");
            let m = h.header.as_ref().ok_or_else(|| hctx.err("required"))?;
            Filter::Header(super::route::header_matcher(m, &hctx)?)
        }
        Some(S::ResponseFlagFilter(r)) => {
            let mut bits = 0u16;
            for (i, code) in r.flags.iter().enumerate() {
                if !Flags::known(code) {
                    return Err(ctx
                        .at(format!("response_flag_filter.flags[{i}]"))
                        .err(format!("unknown response flag '{code}'")));
                }
                bits |= Flags::bit(code).unwrap_or(0);
            }
            Filter::ResponseFlags((!r.flags.is_empty()).then_some(bits))
        }
        Some(S::GrpcStatusFilter(g)) => {
            Filter::GrpcStatus(g.statuses.iter().map(|s| *s as u32).collect(), g.exclude)
        }
        _ => return Err(ctx.err("a supported filter is required")),
    })
}
