//! TIFF files the crate's writer does not make, built for the tests: planar samples, pages with
//! an ImageDescription (ImageJ's or OME's metadata).

#![allow(dead_code)]

use std::io::Cursor;

use tiff::encoder::{colortype, TiffEncoder, TiffValue};
use tiff::tags::Tag;

/// A little-endian, uncompressed TIFF of 16-bit RGB pages stored as separate planes
/// (PlanarConfiguration 2): each page is given plane after plane (R, then G, then B).
pub fn planar_rgb16(h: u32, w: u32, pages: &[Vec<u16>]) -> Vec<u8> {
    let mut out = b"II*\0".to_vec();
    out.extend(0u32.to_le_bytes());
    let mut next_at = 4usize;
    let plane_bytes = h * w * 2;
    for page in pages {
        assert_eq!(page.len() as u32, 3 * h * w);
        let data_at = out.len() as u32;
        for v in page {
            out.extend(v.to_le_bytes());
        }
        let bits_at = out.len() as u32;
        for _ in 0..3 {
            out.extend(16u16.to_le_bytes());
        }
        let offsets_at = out.len() as u32;
        for i in 0..3 {
            out.extend((data_at + i * plane_bytes).to_le_bytes());
        }
        let counts_at = out.len() as u32;
        for _ in 0..3 {
            out.extend(plane_bytes.to_le_bytes());
        }
        let ifd_at = out.len() as u32;
        out[next_at..next_at + 4].copy_from_slice(&ifd_at.to_le_bytes());
        // (tag, type: 3 SHORT / 4 LONG, count, value or offset)
        let entries: [(u16, u16, u32, u32); 10] = [
            (256, 4, 1, w),
            (257, 4, 1, h),
            (258, 3, 3, bits_at),
            (259, 3, 1, 1),
            (262, 3, 1, 2),
            (273, 4, 3, offsets_at),
            (277, 3, 1, 3),
            (278, 4, 1, h),
            (279, 4, 3, counts_at),
            (284, 3, 1, 2),
        ];
        out.extend((entries.len() as u16).to_le_bytes());
        for (tag, ty, count, value) in entries {
            out.extend(tag.to_le_bytes());
            out.extend(ty.to_le_bytes());
            out.extend(count.to_le_bytes());
            out.extend(value.to_le_bytes());
        }
        next_at = out.len();
        out.extend(0u32.to_le_bytes());
    }
    out
}

/// Pages of colour type `C` (each `h x w` pixels), the first with `description` as its
/// ImageDescription.
pub fn described<C: colortype::ColorType>(
    h: u32,
    w: u32,
    pages: &[Vec<C::Inner>],
    description: &str,
) -> Vec<u8>
where
    [C::Inner]: TiffValue,
{
    let mut out = Cursor::new(Vec::new());
    {
        let mut enc = TiffEncoder::new(&mut out).unwrap();
        for (i, page) in pages.iter().enumerate() {
            let mut image = enc.new_image::<C>(w, h).unwrap();
            if i == 0 {
                image
                    .encoder()
                    .write_tag(Tag::ImageDescription, description)
                    .unwrap();
            }
            image.write_data(page).unwrap();
        }
    }
    out.into_inner()
}

/// An ImageJ hyperstack's description.
pub fn imagej(channels: usize, slices: usize) -> String {
    format!(
        "ImageJ=1.54f\nimages={}\nchannels={channels}\nslices={slices}\nhyperstack=true\n\
         mode=composite\nloop=false\n",
        channels * slices
    )
}

/// An OME-XML description of one image of `c` channels and `z` planes in `order`.
pub fn ome(order: &str, c: usize, z: usize, h: u32, w: u32) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<OME xmlns=\"http://www.openmicroscopy.org/\
         Schemas/OME/2016-06\"><Image ID=\"Image:0\" Name=\"t\"><Pixels BigEndian=\"false\" \
         DimensionOrder=\"{order}\" ID=\"Pixels:0\" SizeC=\"{c}\" SizeT=\"1\" SizeX=\"{w}\" \
         SizeY=\"{h}\" SizeZ=\"{z}\" Type=\"uint8\"><Channel ID=\"Channel:0:0\" \
         SamplesPerPixel=\"1\"/><TiffData/></Pixels></Image></OME>"
    )
}
