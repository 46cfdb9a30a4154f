//! Views (2.x): read-only functions whose rows clients read like a table's. A view runs on the
//! database's own instance, in a transaction that is always rolled back (a view cannot write),
//! and answers its rows (`__call_view__` for a per-caller view, `__call_view_anon__` for an
//! anonymous one).

use epoch_sats::bsatn::{self, Reader};
use epoch_sats::{AlgebraicType, ProductType, Typespace};
use epoch_schema::ViewDef;

use crate::module::{deadline_ticks, identity_words, trap_outcome};
use crate::{ModuleHost, ReadSet, ReducerOutcome};

/// What a view answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ViewOutput {
    /// Its rows, each the BSATN of the view's row type.
    Rows(Vec<Box<[u8]>>),
    /// A query view's SQL, to be run as a query.
    Sql(String),
}

/// The type of a view's rows as the module wrote it: `T` of `Vec<T>` or `Option<T>`.
pub fn view_row_element(view: &ViewDef) -> Option<&AlgebraicType> {
    match &view.return_type {
        AlgebraicType::Array(e) => Some(e.as_ref()),
        AlgebraicType::Sum(s) if s.variants.len() == 2 && s.variants[0].name.as_deref() == Some("some") => {
            Some(&s.variants[0].ty)
        }
        _ => None,
    }
}

/// The product type of a view's rows: `T` of `Vec<T>` or `Option<T>`, resolved.
pub fn view_row_type(typespace: &Typespace, view: &ViewDef) -> Option<ProductType> {
    match view_row_element(view)? {
        AlgebraicType::Ref(r) => match typespace.types.get(*r as usize) {
            Some(AlgebraicType::Product(p)) => Some(p.clone()),
            _ => None,
        },
        AlgebraicType::Product(p) => Some(p.clone()),
        _ => None,
    }
}

impl ModuleHost {
    /// Runs view `view_id` (its position in the module's views) for `sender` with no
    /// arguments, in a transaction rolled back afterwards; answers its output and what it read.
    pub fn call_view(
        &mut self,
        view_id: usize,
        sender: epoch_sats::Identity,
    ) -> Result<(ViewOutput, ReadSet), ReducerOutcome> {
        let def = self.def().clone();
        let view = &def.views[view_id];
        let row_type = view_row_type(&def.typespace, view)
            .ok_or_else(|| ReducerOutcome::Trapped(format!("view `{}` has an unsupported return type", view.name)))?;
        let (store, instance, config, poisoned) = self.parts_mut();
        let timeout = config.reducer_timeout;
        store.data_mut().db.as_mut().expect("the database is set at load").begin();
        let (source, sink) = store.data_mut().start_call(Vec::new(), Some(std::sync::Arc::from(view.name.as_str())));
        store.data_mut().reads = Some(ReadSet::default());
        store.set_epoch_deadline(deadline_ticks(timeout));
        let res = if view.is_anonymous {
            instance
                .get_typed_func::<(u32, u32, u32), i32>(&mut *store, "__call_view_anon__")
                .and_then(|f| f.call(&mut *store, (view.index, source, sink)))
        } else {
            let s = identity_words(&sender);
            instance
                .get_typed_func::<(u32, u64, u64, u64, u64, u32, u32), i32>(&mut *store, "__call_view__")
                .and_then(|f| f.call(&mut *store, (view.index, s[0], s[1], s[2], s[3], source, sink)))
        };
        let env = store.data_mut();
        let output = env.finish_call();
        let reads = env.reads.take().unwrap_or_default();
        env.db.as_mut().expect("the database is set at load").rollback();
        let answer = match res {
            Ok(0) => split_rows(&def.typespace, &row_type, &output).map(ViewOutput::Rows),
            Ok(2) => read_with_header(&def.typespace, &row_type, &output),
            Ok(_) => Err(ReducerOutcome::Failed(String::from_utf8_lossy(&output).into_owned())),
            Err(err) => {
                *poisoned = true;
                Err(trap_outcome(&err, env.limiter.denied, &mut env.panic_message, timeout))
            }
        };
        answer.map(|output| (output, reads))
    }
}

/// A `ViewResultHeader` (0 `RowData`, 1 `RawSql(String)`), then the rows for `RowData`.
fn read_with_header(ts: &Typespace, row_type: &ProductType, bytes: &[u8]) -> Result<ViewOutput, ReducerOutcome> {
    let bad = |e: bsatn::DecodeError| ReducerOutcome::Trapped(format!("the view's answer does not decode: {e}"));
    let mut r = Reader::new(bytes);
    match r.u8().map_err(bad)? {
        0 => split_rows(ts, row_type, r.remaining()).map(ViewOutput::Rows),
        1 => {
            let sql = r.str().map_err(bad)?.to_string();
            r.finish().map_err(bad)?;
            Ok(ViewOutput::Sql(sql))
        }
        tag => Err(bad(bsatn::DecodeError::InvalidTag { tag, variants: 2 })),
    }
}

/// A BSATN array of rows, split into rows.
fn split_rows(ts: &Typespace, row_type: &ProductType, bytes: &[u8]) -> Result<Vec<Box<[u8]>>, ReducerOutcome> {
    let bad = |e: bsatn::DecodeError| ReducerOutcome::Trapped(format!("the view's rows do not decode: {e}"));
    let ty = AlgebraicType::Product(row_type.clone());
    let mut r = Reader::new(bytes);
    let n = r.len_prefix(1).map_err(bad)?;
    let mut rows = Vec::with_capacity(n);
    for _ in 0..n {
        let start = r.remaining();
        bsatn::skip(ts, &ty, &mut r).map_err(bad)?;
        rows.push(Box::from(&start[..start.len() - r.remaining().len()]));
    }
    r.finish().map_err(bad)?;
    Ok(rows)
}
