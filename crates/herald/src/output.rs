//! Rendering for the CLI: human lines by default, one JSON object per line with `--json`.

use herald_client::{EventRecord, GroupInfo, TopicInfo};
use herald_core::Data;
use serde_json::{json, Value};

pub fn record_json(r: &EventRecord) -> Value {
    json!({
        "topic": r.topic,
        "partition": r.partition,
        "offset": r.offset,
        "timestamp": herald_broker::record::format_time_ms(r.timestamp_ms),
        "key": r.key_string(),
        "event": r.event.to_json_value(),
    })
}

pub fn record_human(r: &EventRecord) -> String {
    let data = match &r.event.data {
        None => String::new(),
        Some(Data::Json(text)) => text.clone(),
        Some(Data::Binary(b)) => match std::str::from_utf8(b) {
            Ok(s) => s.to_string(),
            Err(_) => format!("<{} bytes>", b.len()),
        },
    };
    let key = r
        .key_string()
        .map(|k| format!(" key={k}"))
        .unwrap_or_default();
    format!(
        "{}/{}@{} {} {} id={}{} {}",
        r.topic,
        r.partition,
        r.offset,
        herald_broker::record::format_time_ms(r.timestamp_ms),
        r.event.ty,
        r.event.id,
        key,
        data
    )
}

pub fn topic_human(t: &TopicInfo) -> String {
    let events: u64 = t
        .partition_stats
        .iter()
        .map(|p| p.end_offset - p.start_offset)
        .sum();
    let bytes: u64 = t.partition_stats.iter().map(|p| p.size_bytes).sum();
    format!(
        "{:<30} partitions={:<4} fsync={:<8} events={:<10} bytes={}",
        t.name,
        t.partitions,
        format!("{:?}", t.config.fsync).to_lowercase(),
        events,
        bytes
    )
}

pub fn topic_detail_human(t: &TopicInfo) -> String {
    let mut out = topic_human(t);
    out.push_str(&format!(
        "\n  created {}\n  config {}\n",
        t.created_at,
        serde_json::to_string(&t.config).unwrap_or_default()
    ));
    for p in &t.partition_stats {
        out.push_str(&format!(
            "  partition {:<4} offsets {}..{}  {} bytes\n",
            p.partition, p.start_offset, p.end_offset, p.size_bytes
        ));
    }
    out
}

pub fn group_human(g: &GroupInfo) -> String {
    let lag: u64 = g.offsets.iter().map(|o| o.lag).sum();
    format!(
        "{:<30} members={:<4} generation={:<6} lag={}",
        g.name,
        g.members.len(),
        g.generation,
        lag
    )
}

pub fn group_detail_human(g: &GroupInfo) -> String {
    let mut out = group_human(g);
    out.push('\n');
    for m in &g.members {
        let parts: Vec<String> = m
            .assignments
            .iter()
            .map(|a| format!("{}/{}", a.topic, a.partition))
            .collect();
        out.push_str(&format!(
            "  member {} owns {}\n",
            m.member_id,
            parts.join(", ")
        ));
    }
    out.push_str(&format!(
        "  {:<24} {:>9} {:>12} {:>12} {:>10}\n",
        "TOPIC", "PARTITION", "COMMITTED", "END", "LAG"
    ));
    for o in &g.offsets {
        let committed = o.committed.map_or("-".to_string(), |c| c.to_string());
        out.push_str(&format!(
            "  {:<24} {:>9} {:>12} {:>12} {:>10}\n",
            o.topic, o.partition, committed, o.end_offset, o.lag
        ));
    }
    out
}
