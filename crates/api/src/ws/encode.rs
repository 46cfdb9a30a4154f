//! Server messages of SpacetimeDB 1.3's WebSocket protocol (v1), encoded as BSATN (binary
//! frames, with the compression tag byte) or as JSON (text frames), from the database's
//! [`Outgoing`] messages. Layouts: `docs/notes/websocket-1.3.md`.

use std::sync::Arc;

use axum::body::Bytes;

use epoch_core::clients::{OneOffRows, QueryUpdate, RowBlock, RowsReply, TableRows, TxEvent, TxStatus, WireSchema};
use epoch_core::Outgoing;
use epoch_sats::json::write_str;
use epoch_sats::{bsatn, json, AlgebraicType, AlgebraicValue, ProductType};

use crate::limits::COMPRESS_THRESHOLD;

/// The two wire formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Bsatn,
    Json,
}

/// How binary server messages are compressed (query parameter `compression`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Brotli,
    Gzip,
}

/// One encoded frame: binary (tag byte first) or text.
pub enum Frame {
    Binary(Bytes),
    Text(Bytes),
}

/// How one connection wants its messages.
#[derive(Debug, Clone, Copy)]
pub struct Encoder {
    pub format: Format,
    pub compression: Compression,
    /// `light=true`: others' transactions come as `TransactionUpdateLight`.
    pub light: bool,
}

// ------------------------------------------------------------------------------------------------
// Server message tags (1.3's `ServerMessage` variant order)

const INITIAL_SUBSCRIPTION: u8 = 0;
const TRANSACTION_UPDATE: u8 = 1;
const TRANSACTION_UPDATE_LIGHT: u8 = 2;
const IDENTITY_TOKEN: u8 = 3;
const ONE_OFF_QUERY_RESPONSE: u8 = 4;
const SUBSCRIBE_APPLIED: u8 = 5;
const UNSUBSCRIBE_APPLIED: u8 = 6;
const SUBSCRIPTION_ERROR: u8 = 7;
const SUBSCRIBE_MULTI_APPLIED: u8 = 8;
const UNSUBSCRIBE_MULTI_APPLIED: u8 = 9;

impl Encoder {
    /// The frame of `msg` for this connection; `None` for a message that is not a frame.
    pub fn encode(&self, msg: &Outgoing) -> Option<Frame> {
        match msg {
            Outgoing::Tx { event, updates, to_caller } => {
                let light = self.light && !to_caller;
                // Clients that receive the same updates of one transaction share one frame.
                let code = (self.format == Format::Json) as u8 | (light as u8) << 1 | (self.compression as u8) << 2;
                let encode = || self.finish(|w| tx_update(w, event, updates, light));
                // A message nobody else holds (a caller's own outcome) skips the shared cache.
                let bytes = if Arc::strong_count(event) == 1 {
                    Bytes::from(encode())
                } else {
                    Bytes::from_owner(event.frames.get_or_encode(code, updates, encode))
                };
                Some(self.frame(bytes))
            }
            Outgoing::Close(_) => None,
            Outgoing::Rows { tables, .. } => {
                // Room for every row, its offset and the headers, so the buffer never regrows.
                let hint = tables.iter().map(|t| t.rows.data().len() + 8 * t.rows.len() + 128).sum::<usize>() + 256;
                Some(self.frame(Bytes::from(self.finish_with_capacity(hint, |w| other_message(w, msg)))))
            }
            other => Some(self.frame(Bytes::from(self.finish(|w| other_message(w, other))))),
        }
    }

    /// The `IdentityToken` message every connection starts with.
    pub fn identity_token(&self, identity: epoch_core::Identity, token: &str, connection_id: [u8; 16]) -> Frame {
        self.frame(
            self.finish(|w| {
                w.variant(IDENTITY_TOKEN, "IdentityToken");
                w.begin_struct();
                w.field("identity");
                w.identity(&identity);
                w.field("token");
                w.str(token);
                w.field("connection_id");
                w.connection_id(&connection_id);
                w.end_struct();
                w.end_variant();
            })
            .into(),
        )
    }

    fn frame(&self, bytes: Bytes) -> Frame {
        match self.format {
            Format::Bsatn => Frame::Binary(bytes),
            Format::Json => Frame::Text(bytes),
        }
    }

    /// Runs `write` into a fresh message and applies the compression tag (binary only).
    fn finish(&self, write: impl FnOnce(&mut Writer)) -> Vec<u8> {
        self.finish_with_capacity(256, write)
    }

    fn finish_with_capacity(&self, capacity: usize, write: impl FnOnce(&mut Writer)) -> Vec<u8> {
        let mut w = Writer::new(self.format, capacity);
        if self.format == Format::Bsatn {
            w.buf.push(0);
        }
        write(&mut w);
        let buf = w.buf;
        if self.format == Format::Json || buf.len() - 1 <= COMPRESS_THRESHOLD {
            return buf;
        }
        match self.compression {
            Compression::None => buf,
            Compression::Brotli => {
                let mut out = vec![1u8];
                let params = brotli::enc::BrotliEncoderParams { quality: 1, ..Default::default() };
                let mut input = &buf[1..];
                if brotli::BrotliCompress(&mut input, &mut out, &params).is_err() {
                    return buf;
                }
                out
            }
            Compression::Gzip => {
                use std::io::Write;
                let mut enc = flate2::write::GzEncoder::new(vec![2u8], flate2::Compression::fast());
                if enc.write_all(&buf[1..]).is_err() {
                    return buf;
                }
                enc.finish().unwrap_or(buf)
            }
        }
    }
}

fn tx_update(w: &mut Writer, event: &TxEvent, updates: &[Arc<QueryUpdate>], light: bool) {
    if light {
        w.variant(TRANSACTION_UPDATE_LIGHT, "TransactionUpdateLight");
        w.begin_struct();
        w.field("request_id");
        w.u32(event.request_id);
        w.field("update");
        database_update_of_tx(w, &event.schema, updates);
        w.end_struct();
        w.end_variant();
        return;
    }
    w.variant(TRANSACTION_UPDATE, "TransactionUpdate");
    w.begin_struct();
    w.field("status");
    match &event.status {
        TxStatus::Committed => {
            w.variant(0, "Committed");
            database_update_of_tx(w, &event.schema, updates);
            w.end_variant();
        }
        TxStatus::Failed(msg) => {
            w.variant(1, "Failed");
            w.str(msg);
            w.end_variant();
        }
        TxStatus::OutOfEnergy => {
            w.variant(2, "OutOfEnergy");
            w.unit();
            w.end_variant();
        }
    }
    w.field("timestamp");
    w.special_i64("__timestamp_micros_since_unix_epoch__", event.timestamp_micros);
    w.field("caller_identity");
    w.identity(&event.caller.identity);
    w.field("caller_connection_id");
    w.connection_id(&event.caller.connection_id);
    w.field("reducer_call");
    w.begin_struct();
    w.field("reducer_name");
    w.str(&event.reducer_name);
    w.field("reducer_id");
    w.u32(event.reducer_id);
    w.field("args");
    args(w, event);
    w.field("request_id");
    w.u32(event.request_id);
    w.end_struct();
    w.field("energy_quanta_used");
    w.begin_struct();
    w.field("quanta");
    w.u128(0);
    w.end_struct();
    w.field("total_host_execution_duration");
    w.special_i64("__time_duration_micros__", event.duration_micros);
    w.end_struct();
    w.end_variant();
}

/// A reducer call's arguments: BSATN bytes, or a JSON string holding the JSON array.
fn args(w: &mut Writer, event: &TxEvent) {
    match w.format {
        Format::Bsatn => w.bytes(&event.args),
        Format::Json if event.json_args.is_some() => w.str(event.json_args.as_deref().unwrap_or("[]")),
        Format::Json => {
            let params = event.schema.reducers.get(event.reducer_id as usize).map(|(_, p)| p);
            let text = match params {
                Some(p) if !event.args.is_empty() || p.elements.is_empty() => {
                    let ty = AlgebraicType::Product(p.clone());
                    bsatn::decode(&event.schema.typespace, &ty, &event.args)
                        .ok()
                        .map(|v| positional_row(&event.schema, p, &v))
                        .unwrap_or_else(|| "[]".into())
                }
                _ => "[]".into(),
            };
            w.str(&text);
        }
    }
}

/// A transaction's `DatabaseUpdate`: one `TableUpdate` per table, holding each query's update.
fn database_update_of_tx(w: &mut Writer, schema: &WireSchema, updates: &[Arc<QueryUpdate>]) {
    let mut tables: Vec<(u32, Vec<&QueryUpdate>)> = Vec::new();
    for u in updates {
        match tables.iter_mut().find(|(t, _)| *t == u.table_id) {
            Some((_, list)) => list.push(u),
            None => tables.push((u.table_id, vec![u])),
        }
    }
    w.begin_struct();
    w.field("tables");
    w.begin_array(tables.len());
    for (table, list) in &tables {
        let Some(t) = schema.tables.get(*table as usize) else { continue };
        w.element();
        w.begin_struct();
        w.field("table_id");
        w.u32(t.wire_id);
        w.field("table_name");
        w.str(&t.name);
        w.field("num_rows");
        w.u64(list.iter().map(|u| (u.deletes.len() + u.inserts.len()) as u64).sum());
        w.field("updates");
        w.begin_array(list.len());
        for u in list {
            w.element();
            // Transaction rows are sent with offsets and positionally in JSON, as 1.3 does.
            w.compressable_query_update(|w| {
                w.field("deletes");
                w.row_list(schema, *table, u.deletes.iter().map(|r| &r[..]), RowStyle::Delta);
                w.field("inserts");
                w.row_list(schema, *table, u.inserts.iter().map(|r| &r[..]), RowStyle::Delta);
            });
        }
        w.end_array();
        w.end_struct();
    }
    w.end_array();
    w.end_struct();
}

/// A subscription answer's rows: one `TableUpdate` per query; unsubscribes put them in deletes.
fn table_update_of_rows(w: &mut Writer, schema: &WireSchema, rows: &TableRows, as_deletes: bool) {
    let Some(t) = schema.tables.get(rows.table as usize) else { return };
    w.begin_struct();
    w.field("table_id");
    w.u32(t.wire_id);
    w.field("table_name");
    w.str(&t.name);
    w.field("num_rows");
    w.u64(rows.rows.len() as u64);
    w.field("updates");
    w.begin_array(1);
    w.element();
    let empty = RowBlock::default();
    let (deletes, inserts) = if as_deletes { (&rows.rows, &empty) } else { (&empty, &rows.rows) };
    w.compressable_query_update(|w| {
        w.field("deletes");
        w.row_block(schema, rows.table, deletes);
        w.field("inserts");
        w.row_block(schema, rows.table, inserts);
    });
    w.end_array();
    w.end_struct();
}

fn rows_database_update(w: &mut Writer, schema: &WireSchema, tables: &[TableRows], as_deletes: bool) {
    w.begin_struct();
    w.field("tables");
    w.begin_array(tables.len());
    for t in tables {
        w.element();
        table_update_of_rows(w, schema, t, as_deletes);
    }
    w.end_array();
    w.end_struct();
}

/// A server message other than a transaction update or a close (those are written elsewhere).
fn other_message(w: &mut Writer, msg: &Outgoing) {
    match msg {
        Outgoing::Rows { kind, request_id, query_id, micros, tables, schema } => {
            rows_message(w, kind, *request_id, *query_id, *micros, tables, schema)
        }
        Outgoing::SubscriptionError { request_id, query_id, micros, message } => {
            subscription_error(w, *request_id, *query_id, *micros, message)
        }
        Outgoing::OneOff { message_id, micros, result, schema } => {
            one_off_response(w, message_id, *micros, result, schema)
        }
        Outgoing::Tx { .. } | Outgoing::Close(_) => {}
    }
}

/// A subscription's answer: its initial rows, or the rows a (multi-)subscribe added or an
/// unsubscribe removed (sent as deletes).
fn rows_message(
    w: &mut Writer,
    kind: &RowsReply,
    request_id: u32,
    query_id: u32,
    micros: u64,
    tables: &[TableRows],
    schema: &WireSchema,
) {
    let as_deletes = matches!(kind, RowsReply::UnsubscribeApplied | RowsReply::UnsubscribeMultiApplied);
    match kind {
        RowsReply::Initial => {
            w.variant(INITIAL_SUBSCRIPTION, "InitialSubscription");
            w.begin_struct();
            w.field("database_update");
            rows_database_update(w, schema, tables, false);
            w.field("request_id");
            w.u32(request_id);
            w.field("total_host_execution_duration");
            w.special_i64("__time_duration_micros__", micros as i64);
            w.end_struct();
        }
        RowsReply::SubscribeApplied | RowsReply::UnsubscribeApplied => {
            let (tag, name) = if *kind == RowsReply::SubscribeApplied {
                (SUBSCRIBE_APPLIED, "SubscribeApplied")
            } else {
                (UNSUBSCRIBE_APPLIED, "UnsubscribeApplied")
            };
            applied_header(w, (tag, name), request_id, micros, query_id);
            w.field("rows");
            let empty = TableRows { table: 0, query: 0, rows: RowBlock::default() };
            let rows = tables.first().unwrap_or(&empty);
            let t = schema.tables.get(rows.table as usize);
            w.begin_struct();
            w.field("table_id");
            w.u32(t.map_or(0, |t| t.wire_id));
            w.field("table_name");
            w.str(t.map_or("", |t| &t.name));
            w.field("table_rows");
            table_update_of_rows(w, schema, rows, as_deletes);
            w.end_struct();
            w.end_struct();
        }
        RowsReply::SubscribeMultiApplied | RowsReply::UnsubscribeMultiApplied => {
            let (tag, name) = if *kind == RowsReply::SubscribeMultiApplied {
                (SUBSCRIBE_MULTI_APPLIED, "SubscribeMultiApplied")
            } else {
                (UNSUBSCRIBE_MULTI_APPLIED, "UnsubscribeMultiApplied")
            };
            applied_header(w, (tag, name), request_id, micros, query_id);
            w.field("update");
            rows_database_update(w, schema, tables, as_deletes);
            w.end_struct();
        }
    }
    w.end_variant();
}

/// `SubscriptionError`: a subscription request refused or ended, with the reason.
fn subscription_error(w: &mut Writer, request_id: Option<u32>, query_id: Option<u32>, micros: u64, message: &str) {
    w.variant(SUBSCRIPTION_ERROR, "SubscriptionError");
    w.begin_struct();
    w.field("total_host_execution_duration_micros");
    w.u64(micros);
    w.field("request_id");
    w.option_u32(request_id);
    w.field("query_id");
    w.option_u32(query_id);
    w.field("table_id");
    w.option_u32(None);
    w.field("error");
    w.str(message);
    w.end_struct();
    w.end_variant();
}

/// `OneOffQueryResponse`: a one-off query's rows (one table) or its error (no tables).
fn one_off_response(
    w: &mut Writer,
    message_id: &[u8],
    micros: u64,
    result: &Result<OneOffRows, String>,
    schema: &WireSchema,
) {
    w.variant(ONE_OFF_QUERY_RESPONSE, "OneOffQueryResponse");
    w.begin_struct();
    w.field("message_id");
    w.bytes(message_id);
    w.field("error");
    match result {
        Ok(_) => w.option_str(None),
        Err(e) => w.option_str(Some(e)),
    }
    w.field("tables");
    match result {
        Ok(rows) => {
            w.begin_array(1);
            w.element();
            one_off_table(w, schema, rows);
            w.end_array();
        }
        Err(_) => {
            w.begin_array(0);
            w.end_array();
        }
    }
    w.field("total_host_execution_duration");
    w.special_i64("__time_duration_micros__", micros as i64);
    w.end_struct();
    w.end_variant();
}

/// The fields every `*Applied` message starts with.
fn applied_header(w: &mut Writer, (tag, name): (u8, &str), request_id: u32, micros: u64, query_id: u32) {
    w.variant(tag, name);
    w.begin_struct();
    w.field("request_id");
    w.u32(request_id);
    w.field("total_host_execution_duration_micros");
    w.u64(micros);
    w.field("query_id");
    w.query_id(query_id);
}

fn one_off_table(w: &mut Writer, schema: &WireSchema, rows: &OneOffRows) {
    w.begin_struct();
    w.field("table_name");
    w.str(&rows.table_name);
    w.field("rows");
    match w.format {
        Format::Bsatn => {
            let ty = AlgebraicType::Product(rows.row_type.clone());
            let encoded: Vec<Vec<u8>> = rows.rows.iter().map(bsatn::to_vec).collect();
            let fixed = epoch_core::clients::static_len(&schema.typespace, &ty).filter(|_| !encoded.is_empty());
            w.bsatn_row_list(fixed, encoded.iter().map(Vec::as_slice));
        }
        Format::Json => {
            w.begin_array(rows.rows.len());
            for v in &rows.rows {
                w.element();
                w.str(&named_row(schema, &rows.row_type, v));
            }
            w.end_array();
        }
    }
    w.end_struct();
}

/// How rows are written in JSON: rows read from a table are objects by column name; rows of a
/// transaction's changes are positional arrays (as 1.3 serializes each).
#[derive(Clone, Copy, PartialEq, Eq)]
enum RowStyle {
    Stored,
    Delta,
}

fn named_row(schema: &WireSchema, row_type: &ProductType, v: &AlgebraicValue) -> String {
    json::to_string(&schema.typespace, &AlgebraicType::Product(row_type.clone()), v).unwrap_or_default()
}

/// A product as a JSON array of its elements (each element in SATS-JSON).
fn positional_row(schema: &WireSchema, row_type: &ProductType, v: &AlgebraicValue) -> String {
    let mut out = String::from("[");
    for (i, (e, x)) in row_type.elements.iter().zip(v.as_product().unwrap_or(&[])).enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = json::write(&mut out, &schema.typespace, &e.ty, x);
    }
    out.push(']');
    out
}

// ------------------------------------------------------------------------------------------------
// One writer for both formats: BSATN appends bytes; JSON appends text.

struct Writer {
    format: Format,
    buf: Vec<u8>,
    /// JSON: whether the next field or element needs a comma before it.
    first: Vec<bool>,
}

impl Writer {
    fn new(format: Format, capacity: usize) -> Self {
        Self { format, buf: Vec::with_capacity(capacity), first: Vec::new() }
    }

    fn text(&mut self, s: &str) {
        self.buf.extend_from_slice(s.as_bytes());
    }

    fn json_string(&mut self, s: &str) {
        let mut out = String::with_capacity(s.len() + 2);
        write_str(&mut out, s);
        self.text(&out);
    }

    fn comma(&mut self) {
        if let Some(first) = self.first.last_mut() {
            if !*first {
                self.buf.push(b',');
            }
            *first = false;
        }
    }

    fn variant(&mut self, tag: u8, name: &str) {
        match self.format {
            Format::Bsatn => self.buf.push(tag),
            Format::Json => {
                self.buf.push(b'{');
                self.json_string(name);
                self.buf.push(b':');
            }
        }
    }

    fn end_variant(&mut self) {
        if self.format == Format::Json {
            self.buf.push(b'}');
        }
    }

    fn unit(&mut self) {
        if self.format == Format::Json {
            self.text("[]");
        }
    }

    fn begin_struct(&mut self) {
        if self.format == Format::Json {
            self.buf.push(b'{');
            self.first.push(true);
        }
    }

    fn field(&mut self, name: &str) {
        if self.format == Format::Json {
            self.comma();
            self.json_string(name);
            self.buf.push(b':');
        }
    }

    fn end_struct(&mut self) {
        if self.format == Format::Json {
            self.first.pop();
            self.buf.push(b'}');
        }
    }

    fn begin_array(&mut self, len: usize) {
        match self.format {
            Format::Bsatn => self.buf.extend_from_slice(&(len as u32).to_le_bytes()),
            Format::Json => {
                self.buf.push(b'[');
                self.first.push(true);
            }
        }
    }

    fn element(&mut self) {
        if self.format == Format::Json {
            self.comma();
        }
    }

    fn end_array(&mut self) {
        if self.format == Format::Json {
            self.first.pop();
            self.buf.push(b']');
        }
    }

    fn u32(&mut self, v: u32) {
        match self.format {
            Format::Bsatn => self.buf.extend_from_slice(&v.to_le_bytes()),
            Format::Json => self.text(&v.to_string()),
        }
    }

    fn u64(&mut self, v: u64) {
        match self.format {
            Format::Bsatn => self.buf.extend_from_slice(&v.to_le_bytes()),
            Format::Json => self.text(&v.to_string()),
        }
    }

    fn u128(&mut self, v: u128) {
        match self.format {
            Format::Bsatn => self.buf.extend_from_slice(&v.to_le_bytes()),
            Format::Json => self.text(&v.to_string()),
        }
    }

    fn str(&mut self, s: &str) {
        match self.format {
            Format::Bsatn => bsatn::write::str(&mut self.buf, s),
            Format::Json => self.json_string(s),
        }
    }

    /// Bytes: length-prefixed in BSATN, a hex string in JSON.
    fn bytes(&mut self, b: &[u8]) {
        match self.format {
            Format::Bsatn => {
                self.buf.extend_from_slice(&(b.len() as u32).to_le_bytes());
                self.buf.extend_from_slice(b);
            }
            Format::Json => {
                let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
                self.json_string(&hex);
            }
        }
    }

    /// A struct of one special field (`Timestamp`, `TimeDuration`).
    fn special_i64(&mut self, name: &str, v: i64) {
        match self.format {
            Format::Bsatn => self.buf.extend_from_slice(&v.to_le_bytes()),
            Format::Json => {
                self.begin_struct();
                self.field(name);
                self.text(&v.to_string());
                self.end_struct();
            }
        }
    }

    fn identity(&mut self, id: &epoch_core::Identity) {
        match self.format {
            Format::Bsatn => self.buf.extend_from_slice(&id.to_le_bytes()),
            Format::Json => {
                // 1.3 writes the u256 as `{:#x}`: `0x`, no leading zeros.
                let hex = id.to_hex();
                let trimmed = hex.trim_start_matches('0');
                let text = format!("0x{}", if trimmed.is_empty() { "0" } else { trimmed });
                self.begin_struct();
                self.field("__identity__");
                self.json_string(&text);
                self.end_struct();
            }
        }
    }

    fn connection_id(&mut self, id: &[u8; 16]) {
        match self.format {
            Format::Bsatn => self.buf.extend_from_slice(id),
            Format::Json => {
                self.begin_struct();
                self.field("__connection_id__");
                self.text(&u128::from_le_bytes(*id).to_string());
                self.end_struct();
            }
        }
    }

    fn query_id(&mut self, id: u32) {
        match self.format {
            Format::Bsatn => self.u32(id),
            Format::Json => {
                self.begin_struct();
                self.field("id");
                self.u32(id);
                self.end_struct();
            }
        }
    }

    /// An `Option`: `some` (tag 0) with `write`'s payload, or `none` (tag 1).
    fn option<T>(&mut self, v: Option<T>, write: impl FnOnce(&mut Self, T)) {
        match v {
            Some(x) => {
                self.variant(0, "some");
                write(self, x);
            }
            None => {
                self.variant(1, "none");
                self.unit();
            }
        }
        self.end_variant();
    }

    fn option_u32(&mut self, v: Option<u32>) {
        self.option(v, Self::u32);
    }

    fn option_str(&mut self, v: Option<&str>) {
        self.option(v, |w, s| w.str(s));
    }

    /// A `CompressableQueryUpdate` (binary: always `Uncompressed`, as 1.3 sends them) around a
    /// `QueryUpdate` whose fields `write` adds.
    fn compressable_query_update(&mut self, write: impl FnOnce(&mut Self)) {
        if self.format == Format::Bsatn {
            self.buf.push(0);
        }
        self.begin_struct();
        write(self);
        self.end_struct();
    }

    /// A row list of table `table`.
    fn row_list<'r>(
        &mut self,
        schema: &WireSchema,
        table: u32,
        rows: impl ExactSizeIterator<Item = &'r [u8]> + Clone,
        style: RowStyle,
    ) {
        let Some(t) = schema.tables.get(table as usize) else { return };
        match self.format {
            Format::Bsatn => {
                let fixed = match style {
                    RowStyle::Stored if rows.len() > 0 => t.fixed_row_len,
                    _ => None,
                };
                self.bsatn_row_list(fixed, rows);
            }
            Format::Json => {
                let AlgebraicType::Product(p) = &t.row_type else { return };
                self.begin_array(rows.len());
                for r in rows {
                    self.element();
                    let text = match bsatn::decode(&schema.typespace, &t.row_type, r) {
                        Ok(v) if style == RowStyle::Stored => named_row(schema, p, &v),
                        Ok(v) => positional_row(schema, p, &v),
                        Err(_) => "null".into(),
                    };
                    self.json_string(&text);
                }
                self.end_array();
            }
        }
    }

    /// Stored rows packed in a block: with a fixed row size in BSATN, the block is the row
    /// list's data as it is (one copy); otherwise row by row.
    fn row_block(&mut self, schema: &WireSchema, table: u32, block: &RowBlock) {
        let fixed = schema.tables.get(table as usize).and_then(|t| t.fixed_row_len).and_then(|n| u16::try_from(n).ok());
        match (self.format, fixed) {
            (Format::Bsatn, Some(n)) if !block.is_empty() => {
                debug_assert_eq!(block.data().len(), n as usize * block.len(), "fixed-size rows fill the block");
                self.buf.push(0);
                self.buf.extend_from_slice(&n.to_le_bytes());
                self.buf.extend_from_slice(&(block.data().len() as u32).to_le_bytes());
                self.buf.extend_from_slice(block.data());
            }
            _ => self.row_list(schema, table, block.iter(), RowStyle::Stored),
        }
    }

    /// A `BsatnRowList`: `FixedSize(n)` or `RowOffsets` (each row's start), then the rows.
    fn bsatn_row_list<'r>(&mut self, fixed: Option<usize>, rows: impl Iterator<Item = &'r [u8]> + Clone) {
        match fixed.and_then(|n| u16::try_from(n).ok()) {
            Some(n) => {
                self.buf.push(0);
                self.buf.extend_from_slice(&n.to_le_bytes());
            }
            None => {
                self.buf.push(1);
                let count = rows.clone().count();
                self.buf.extend_from_slice(&(count as u32).to_le_bytes());
                let mut at = 0u64;
                for r in rows.clone() {
                    self.buf.extend_from_slice(&at.to_le_bytes());
                    at += r.len() as u64;
                }
            }
        }
        let total: usize = rows.clone().map(<[u8]>::len).sum();
        self.buf.extend_from_slice(&(total as u32).to_le_bytes());
        for r in rows {
            self.buf.extend_from_slice(r);
        }
    }
}
