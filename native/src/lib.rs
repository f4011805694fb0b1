//! crm-audit's compiled collector kernel: the documents of a stream format 2 batch, from
//! the event bytes as received straight to the JSON the bulk body carries
//! (`collector.native` loads it; `collector.documents` stays the reference).

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};

mod document;
mod event;
mod facts;
mod json;

/// `documents(datas, heads, event_hashes, agent_id, received_unix_nano)` -> one entry per
/// event: `(doc_id, sequence, timestamp_unix_nano, body, original)`, or None where the
/// kernel declines and the caller builds that document in Python. `heads` may be empty
/// (no verified chain); otherwise all three lists have one entry per event.
#[pyfunction]
fn documents<'py>(
    py: Python<'py>,
    datas: &Bound<'py, PyList>,
    heads: &Bound<'py, PyList>,
    event_hashes: &Bound<'py, PyList>,
    agent_id: &str,
    received_unix_nano: i64,
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

#[pymodule]
fn crm_audit_native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(documents, m)?)?;
    m.add_function(wrap_pyfunction!(scan, m)?)?;
    m.add_class::<ScannedEvent>()?;
    m.add("KERNEL_VERSION", 2)?;
    Ok(())
}
