//! crm-audit's compiled kernels. The collector's: the documents of a stream format 2
//! batch, from the event bytes as received straight to the JSON the bulk body carries
//! (`collector.native` loads it; `collector.documents` stays the reference). The agent's:
//! a JSON line mapped to its serialized AuditEvent (`agent.native` loads it;
//! `agent.parsers.jsonlines` stays the reference).

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};

mod document;
mod event;
mod facts;
mod json;
mod jsonread;
mod mapping;

use std::collections::HashMap;
use std::sync::Mutex;

/// `documents(datas, heads, event_hashes, agent_id, received_unix_nano, inline_bytes)` ->
/// one entry per event: `(doc_id, sequence, timestamp_unix_nano, body, original)`, or None
/// where the kernel declines and the caller builds that document in Python. `heads` may
/// be empty (no verified chain); otherwise all three lists have one entry per event.
/// `inline_bytes`: each body carries its event's bytes (`integrity.canonical`); false
/// when the caller stores them per batch.
#[pyfunction]
fn documents<'py>(
    py: Python<'py>,
    datas: &Bound<'py, PyList>,
    heads: &Bound<'py, PyList>,
    event_hashes: &Bound<'py, PyList>,
    agent_id: &str,
    received_unix_nano: i64,
    inline_bytes: bool,
) -> PyResult<Bound<'py, PyList>> {
    let count = datas.len();
    if event_hashes.len() != count || (!heads.is_empty() && heads.len() != count) {
        return Err(pyo3::exceptions::PyValueError::new_err(
            "datas, heads and event_hashes must have one entry per event",
        ));
    }
    // Copied out while the GIL is held; the documents are then built without it, so
    // the collector's other threads (gRPC, bulk requests) run meanwhile.
    struct Input {
        data: Vec<u8>,
        head: Option<Vec<u8>>,
        hash: Vec<u8>,
    }
    let bytes_at = |list: &Bound<'py, PyList>, position: usize| -> PyResult<Vec<u8>> {
        Ok(list
            .get_item(position)?
            .downcast_into::<PyBytes>()?
            .as_bytes()
            .to_vec())
    };
    let mut inputs: Vec<Input> = Vec::with_capacity(count);
    for position in 0..count {
        let head = if heads.is_empty() || heads.get_item(position)?.is_none() {
            None
        } else {
            Some(bytes_at(heads, position)?)
        };
        inputs.push(Input {
            data: bytes_at(datas, position)?,
            head,
            hash: bytes_at(event_hashes, position)?,
        });
    }
    let agent = agent_id.to_owned();
    let built: Vec<Option<document::Built>> = py.allow_threads(move || {
        inputs
            .iter()
            .map(|input| {
                document::build(
                    &input.data,
                    input.head.as_deref(),
                    &input.hash,
                    &agent,
                    received_unix_nano,
                    inline_bytes,
                )
                .ok()
            })
            .collect()
    });
    let out = PyList::empty(py);
    for entry in built {
        match entry {
            None => out.append(py.None())?,
            Some(doc) => {
                let item = PyTuple::new(
                    py,
                    [
                        doc.doc_id.into_pyobject(py)?.into_any(),
                        doc.sequence.into_pyobject(py)?.into_any(),
                        doc.timestamp_unix_nano.into_pyobject(py)?.into_any(),
                        PyBytes::new(py, &doc.body).into_any(),
                        doc.original.into_pyobject(py)?.into_any(),
                    ],
                )?;
                out.append(item)?;
            }
        }
    }
    Ok(out)
}

/// What the seal and chain checks of `proto.integrity.verify_batch` read of an event.
#[pyclass(frozen, get_all, module = "crm_audit_native")]
struct ScannedEvent {
    sequence: u64,
    stream_id: String,
    time_unix_nano: i64,
    observed_unix_nano: i64,
}

/// `scan(datas, domain)` -> `(events, event_hashes)`: each event's `ScannedEvent` and
/// SHA-256(`domain` || its bytes), or None when any event's bytes do not decode (the
/// caller then parses them in Python, which names the error).
#[pyfunction]
fn scan<'py>(
    py: Python<'py>,
    datas: &Bound<'py, PyList>,
    domain: &[u8],
) -> PyResult<Option<(Bound<'py, PyList>, Bound<'py, PyList>)>> {
    let mut inputs: Vec<Vec<u8>> = Vec::with_capacity(datas.len());
    for item in datas.iter() {
        inputs.push(item.downcast_into::<PyBytes>()?.as_bytes().to_vec());
    }
    let domain = domain.to_vec();
    let scanned = py.allow_threads(move || facts::scan(&inputs, &domain));
    let Some(scanned) = scanned else {
        return Ok(None);
    };
    let events = PyList::empty(py);
    let hashes = PyList::empty(py);
    for (facts, hash) in scanned {
        events.append(Bound::new(
            py,
            ScannedEvent {
                sequence: facts.sequence,
                stream_id: facts.stream_id,
                time_unix_nano: facts.time_unix_nano,
                observed_unix_nano: facts.observed_unix_nano,
            },
        )?)?;
        hashes.append(PyBytes::new(py, &hash))?;
    }
    Ok(Some((events, hashes)))
}

/// Action names a mapper remembers (as the Python mapping's cache: a log naming unbounded
/// actions is not kept).
const ACTIONS_MAX: usize = 1024;

/// `JsonLinesMapper(fields, resolve, is_ip)`: a source's plan of plain paths, `fields`
/// as (target, dotted path of one or two keys, flag for an unusable value) in the order
/// the plan applies them; `resolve(action)` -> (canonical name or None, event categories,
/// event types, audit category, implied outcome) and `is_ip(text)` -> bool are the
/// source's vocabulary and Python's address check. ValueError for a field it cannot map.
/// Calling it with a line gives the serialized AuditEvent, or None where it declines
/// and the caller parses that line in Python.
#[pyclass(frozen, module = "crm_audit_native")]
struct JsonLinesMapper {
    fields: Vec<mapping::Field>,
    resolve: PyObject,
    is_ip: PyObject,
    actions: Mutex<HashMap<String, mapping::Resolved>>,
}

struct PythonOracle<'a, 'py> {
    py: Python<'py>,
    mapper: &'a JsonLinesMapper,
}

impl mapping::Oracle for PythonOracle<'_, '_> {
    fn resolve(&self, action: &str) -> Result<mapping::Resolved, mapping::Decline> {
        let mut actions = self.mapper.actions.lock().map_err(|_| mapping::Decline)?;
        if let Some(found) = actions.get(action) {
            return Ok(found.clone());
        }
        let answer = self
            .mapper
            .resolve
            .call1(self.py, (action,))
            .map_err(|_| mapping::Decline)?;
        let (name, event_category, event_type, audit_category, implied_outcome): (
            Option<String>,
            Vec<String>,
            Vec<String>,
            i32,
            i32,
        ) = answer.extract(self.py).map_err(|_| mapping::Decline)?;
        let resolved = mapping::Resolved {
            name,
            event_category,
            event_type,
            audit_category,
            implied_outcome,
        };
        if actions.len() < ACTIONS_MAX {
            actions.insert(action.to_owned(), resolved.clone());
        }
        Ok(resolved)
    }

    fn is_ip(&self, text: &str) -> Result<bool, mapping::Decline> {
        let answer = self
            .mapper
            .is_ip
            .call1(self.py, (text,))
            .map_err(|_| mapping::Decline)?;
        answer.extract(self.py).map_err(|_| mapping::Decline)
    }
}

#[pymethods]
impl JsonLinesMapper {
    #[new]
    fn new(
        fields: Vec<(String, String, String)>,
        resolve: PyObject,
        is_ip: PyObject,
    ) -> PyResult<Self> {
        let mut plan = Vec::with_capacity(fields.len());
        for (target, path, flag) in fields {
            let kind = mapping::Kind::of(&target).ok_or_else(|| {
                pyo3::exceptions::PyValueError::new_err(format!("unknown target {target:?}"))
            })?;
            let field = mapping::Field::new(&path, kind, &flag).ok_or_else(|| {
                pyo3::exceptions::PyValueError::new_err(format!(
                    "{target}: path {path:?} is not one or two keys"
                ))
            })?;
            plan.push(field);
        }
        Ok(JsonLinesMapper {
            fields: plan,
            resolve,
            is_ip,
            actions: Mutex::new(HashMap::new()),
        })
    }

    fn __call__<'py>(&self, py: Python<'py>, line: &[u8]) -> Option<Bound<'py, PyBytes>> {
        let oracle = PythonOracle { py, mapper: self };
        declining_panics(|| mapping::map_line(line, &self.fields, &oracle))
            .map(|bytes| PyBytes::new(py, &bytes))
    }

    /// `stamped(line, stamp, observed_unix_nano, offset)` -> (the stamped event's
    /// deterministic bytes, its effective time), or None where the caller parses the line
    /// in Python: the agent's pipeline work of `Pipeline._record` done here too (the
    /// file's stamp merged, the read time and the record's offset set).
    fn stamped<'py>(
        &self,
        py: Python<'py>,
        line: &[u8],
        stamp: &[u8],
        observed_unix_nano: i64,
        offset: u64,
    ) -> Option<(Bound<'py, PyBytes>, i64)> {
        let oracle = PythonOracle { py, mapper: self };
        let stamp = mapping::Stamp {
            stamp,
            observed_unix_nano,
            offset,
        };
        declining_panics(|| mapping::map_stamped(line, &self.fields, &oracle, &stamp))
            .map(|(bytes, time)| (PyBytes::new(py, &bytes), time))
    }
}

/// `map`'s result, None where it declined — or panicked: a panic (a bug) declines the
/// line like anything else the kernel cannot build, so Python parses it and the agent's
/// reading thread never sees a PanicException.
fn declining_panics<T>(map: impl FnOnce() -> Result<T, mapping::Decline>) -> Option<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(map))
        .ok()?
        .ok()
}

#[pymodule]
fn crm_audit_native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(documents, m)?)?;
    m.add_function(wrap_pyfunction!(scan, m)?)?;
    m.add_class::<ScannedEvent>()?;
    m.add_class::<JsonLinesMapper>()?;
    m.add("KERNEL_VERSION", 3)?;
    // The agent's interface (JsonLinesMapper), versioned apart from the collector's.
    m.add("AGENT_KERNEL_VERSION", 1)?;
    Ok(())
}
