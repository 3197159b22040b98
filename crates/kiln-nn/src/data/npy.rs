//! NumPy's `.npy` and `.npz` files, through the `npyz` crate (each array) and the `zip`
//! crate (the archive): a tensor in and out of NumPy in one call each way.
//!
//! kiln's dtypes are f32, f16, f64 and i32. Reading widens bool and smaller integers to
//! i32 and narrows i64 and u32 to i32 when every value fits (an error names the first
//! that does not); other dtypes (complex, strings, objects) are errors. Fortran-ordered
//! arrays are read into kiln's row-major layout.

use kiln::{DType, Device, Error, Result, Tensor};
use npyz::{NpyFile, TypeChar, WriterBuilder};
use std::io::{Read, Seek, Write};
use std::path::Path;

fn io_error(op: &'static str, path: &Path, reason: impl ToString) -> Error {
    Error::Io {
        op,
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

/// Reads one array from a `.npy` file, on the CPU.
pub fn read_npy(path: impl AsRef<Path>) -> Result<Tensor> {
    let path = path.as_ref();
    let file = std::fs::File::open(path).map_err(|e| io_error("read_npy", path, e))?;
    array_from(std::io::BufReader::new(file)).map_err(|e| io_error("read_npy", path, e))
}

/// Writes `tensor` as a `.npy` file (its dtype kept; row-major).
pub fn write_npy(path: impl AsRef<Path>, tensor: &Tensor) -> Result<()> {
    let path = path.as_ref();
    let mut file = std::fs::File::create(path).map_err(|e| io_error("write_npy", path, e))?;
    let bytes = array_bytes(tensor)?;
    file.write_all(&bytes)
        .map_err(|e| io_error("write_npy", path, e))
}

/// Reads every array of a `.npz` archive (NumPy's `savez` or `savez_compressed`), by
/// name (the member's name without `.npy`), in the archive's order.
pub fn read_npz(path: impl AsRef<Path>) -> Result<Vec<(String, Tensor)>> {
    let path = path.as_ref();
    let bad = |e: String| io_error("read_npz", path, e);
    let file = std::fs::File::open(path).map_err(|e| bad(e.to_string()))?;
    let mut archive = zip::ZipArchive::new(file).map_err(|e| bad(e.to_string()))?;
    let mut out = Vec::new();
    for i in 0..archive.len() {
        let member = archive.by_index(i).map_err(|e| bad(e.to_string()))?;
        let name = member.name().to_string();
        let Some(array) = name.strip_suffix(".npy") else {
            return Err(bad(format!("member {name:?} is not a .npy array")));
        };
        let tensor = array_from(member).map_err(|e| bad(format!("{name}: {e}")))?;
        out.push((array.to_string(), tensor));
    }
    Ok(out)
}

/// Writes `arrays` as an uncompressed `.npz` archive, as NumPy's `savez`: NumPy reads
/// each back under its name.
pub fn write_npz(path: impl AsRef<Path>, arrays: &[(String, Tensor)]) -> Result<()> {
    let path = path.as_ref();
    let bad = |e: String| io_error("write_npz", path, e);
    let file = std::fs::File::create(path).map_err(|e| bad(e.to_string()))?;
    write_archive(file, arrays).map_err(bad)
}

fn write_archive(
    file: impl Write + Seek,
    arrays: &[(String, Tensor)],
) -> std::result::Result<(), String> {
    let mut zip = zip::ZipWriter::new(file);
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .large_file(true);
    for (name, tensor) in arrays {
        let bytes = array_bytes(tensor).map_err(|e| e.to_string())?;
        zip.start_file(format!("{name}.npy"), options)
            .map_err(|e| e.to_string())?;
        zip.write_all(&bytes).map_err(|e| e.to_string())?;
    }
    zip.finish().map(drop).map_err(|e| e.to_string())
}

/// One `.npy` array's bytes.
fn array_bytes(tensor: &Tensor) -> Result<Vec<u8>> {
    let shape: Vec<u64> = tensor.dims().iter().map(|&d| d as u64).collect();
    let mut bytes = Vec::new();
    let written = match tensor.dtype() {
        DType::F32 => write_values(&mut bytes, &shape, tensor.to_vec::<f32>()?),
        DType::F64 => write_values(&mut bytes, &shape, tensor.to_vec::<f64>()?),
        DType::F16 => write_values(&mut bytes, &shape, tensor.to_vec::<half::f16>()?),
        DType::I32 => write_values(&mut bytes, &shape, tensor.to_vec::<i32>()?),
    };
    written.map_err(|e| Error::InvalidArgument {
        op: "write_npy",
        reason: e.to_string(),
    })?;
    Ok(bytes)
}

fn write_values<T: npyz::AutoSerialize>(
    out: &mut Vec<u8>,
    shape: &[u64],
    values: Vec<T>,
) -> std::io::Result<()> {
    let mut writer = npyz::WriteOptions::new()
        .default_dtype()
        .shape(shape)
        .writer(out)
        .begin_nd()?;
    writer.extend(values)?;
    writer.finish()
}

/// One array from a `.npy` stream.
fn array_from(reader: impl Read) -> std::result::Result<Tensor, String> {
    let npy = NpyFile::new(reader).map_err(|e| e.to_string())?;
    let dims: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
    let fortran = npy.order() == npyz::Order::Fortran;
    let npyz::DType::Plain(ts) = npy.dtype() else {
        return Err("record arrays are not supported".into());
    };
    let (kind, size) = (ts.type_char(), ts.size_field());
    let cpu = Device::cpu();
    // Stored Fortran-order, the values are those of the reversed shape, row-major.
    let stored: Vec<usize> = match fortran {
        true => dims.iter().rev().copied().collect(),
        false => dims.clone(),
    };
    let err = |e: std::io::Error| e.to_string();
    let tensor = match (kind, size) {
        (TypeChar::Float, 4) => Tensor::from_vec(npy.into_vec::<f32>().map_err(err)?, stored, &cpu),
        (TypeChar::Float, 8) => Tensor::from_vec(npy.into_vec::<f64>().map_err(err)?, stored, &cpu),
        (TypeChar::Float, 2) => {
            Tensor::from_vec(npy.into_vec::<half::f16>().map_err(err)?, stored, &cpu)
        }
        (TypeChar::Bool, 1) => {
            let v: Vec<i32> = npy
                .into_vec::<bool>()
                .map_err(err)?
                .into_iter()
                .map(i32::from)
                .collect();
            Tensor::from_vec(v, stored, &cpu)
        }
        (TypeChar::Int | TypeChar::Uint, _) => {
            Tensor::from_vec(integers(npy, kind, size)?, stored, &cpu)
        }
        _ => {
            return Err(format!(
                "dtype {ts} is not supported (kiln reads floats, integers and bools)"
            ))
        }
    }
    .map_err(|e| e.to_string())?;
    match fortran && dims.len() > 1 {
        true => {
            let reversed: Vec<isize> = (0..dims.len() as isize).rev().collect();
            tensor
                .permute(&reversed)
                .and_then(|t| t.contiguous())
                .map_err(|e| e.to_string())
        }
        false => Ok(tensor),
    }
}

/// An integer array as i32, refusing values that do not fit.
fn integers<R: Read>(
    npy: NpyFile<R>,
    kind: TypeChar,
    size: u64,
) -> std::result::Result<Vec<i32>, String> {
    let err = |e: std::io::Error| e.to_string();
    let wide: Vec<i64> = match (kind, size) {
        (TypeChar::Int, 1) => npy
            .into_vec::<i8>()
            .map_err(err)?
            .into_iter()
            .map(i64::from)
            .collect(),
        (TypeChar::Int, 2) => npy
            .into_vec::<i16>()
            .map_err(err)?
            .into_iter()
            .map(i64::from)
            .collect(),
        (TypeChar::Int, 4) => npy
            .into_vec::<i32>()
            .map_err(err)?
            .into_iter()
            .map(i64::from)
            .collect(),
        (TypeChar::Int, 8) => npy.into_vec::<i64>().map_err(err)?,
        (TypeChar::Uint, 1) => npy
            .into_vec::<u8>()
            .map_err(err)?
            .into_iter()
            .map(i64::from)
            .collect(),
        (TypeChar::Uint, 2) => npy
            .into_vec::<u16>()
            .map_err(err)?
            .into_iter()
            .map(i64::from)
            .collect(),
        (TypeChar::Uint, 4) => npy
            .into_vec::<u32>()
            .map_err(err)?
            .into_iter()
            .map(i64::from)
            .collect(),
        (TypeChar::Uint, 8) => {
            let v = npy.into_vec::<u64>().map_err(err)?;
            v.into_iter()
                .map(|x| i64::try_from(x).unwrap_or(i64::MAX))
                .collect()
        }
        _ => return Err(format!("{size}-byte integers are not supported")),
    };
    wide.iter()
        .enumerate()
        .map(|(i, &v)| {
            i32::try_from(v)
                .map_err(|_| format!("element {i} is {v}, outside i32, kiln's integer type"))
        })
        .collect()
}
