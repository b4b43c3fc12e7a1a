//! The principal of a verified client certificate: `User:<CN>`.
//!
//! rustls hands out the client's certificate as DER after verifying it; the
//! subject's common name is read here with a small, bounds-checked DER
//! walker instead of a whole X.509 parser. Only the path to the subject is
//! walked (RFC 5280 §4.1):
//!
//! ```text
//! Certificate  ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signature }
//! TBSCertificate ::= SEQUENCE {
//!     version [0] EXPLICIT INTEGER OPTIONAL, serialNumber INTEGER,
//!     signature SEQUENCE, issuer Name, validity SEQUENCE, subject Name, ... }
//! Name ::= SEQUENCE OF SET OF SEQUENCE { type OID, value ANY }
//! ```
//!
//! The common name is the value of attribute 2.5.4.3 (`06 03 55 04 03`) as
//! a UTF8String, PrintableString, IA5String, TeletexString (read as
//! Latin-1), BMPString or UniversalString. A subject without a CN, with two
//! CNs (ambiguous), or with an empty one or one holding control characters
//! gives no principal: such a client is not identified by its certificate
//! and must authenticate with SASL instead (Kafka's default principal
//! builder would use the whole distinguished name; a bare name is what ACLs
//! and `sluice acl` deal in here).
//!
//! Every length is checked against the bytes left; anything unexpected
//! (a wrong tag, a truncated or indefinite length, trailing bytes in the
//! attribute value) gives `None`, never a panic.

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const INTEGER: u8 = 0x02;
const OID: u8 = 0x06;
/// `[0] EXPLICIT`, the optional version of a TBSCertificate.
const VERSION: u8 = 0xa0;
/// 2.5.4.3, id-at-commonName.
const CN_OID: [u8; 3] = [0x55, 0x04, 0x03];

/// `User:<CN>` of the client certificate rustls verified on `conn`, if any
/// (see the module docs for when there is none).
pub fn peer_principal(conn: &rustls::ServerConnection) -> Option<String> {
    let cert = conn.peer_certificates()?.first()?;
    principal_of(cert.as_ref())
}

/// `User:<CN>` of a DER certificate.
pub fn principal_of(cert_der: &[u8]) -> Option<String> {
    common_name(cert_der).map(|cn| format!("User:{cn}"))
}

/// The subject common name of a DER certificate (see the module docs).
pub fn common_name(cert_der: &[u8]) -> Option<String> {
    let (cert, _) = expect(cert_der, SEQUENCE)?;
    let (tbs, _) = expect(cert, SEQUENCE)?;
    let mut rest = tbs;
    if rest.first() == Some(&VERSION) {
        rest = tlv(rest)?.2;
    }
    let (_serial, rest) = expect(rest, INTEGER)?;
    let (_signature, rest) = expect(rest, SEQUENCE)?;
    let (_issuer, rest) = expect(rest, SEQUENCE)?;
    let (_validity, rest) = expect(rest, SEQUENCE)?;
    let (subject, _) = expect(rest, SEQUENCE)?;
    let mut found = None;
    let mut rdns = subject;
    while !rdns.is_empty() {
        let (rdn, next) = expect(rdns, SET)?;
        rdns = next;
        let mut attrs = rdn;
        while !attrs.is_empty() {
            let (attr, next) = expect(attrs, SEQUENCE)?;
            attrs = next;
            let (oid, value) = expect(attr, OID)?;
            if oid != CN_OID {
                continue;
            }
            if found.is_some() {
                return None;
            }
            let (tag, content, trailing) = tlv(value)?;
            if !trailing.is_empty() {
                return None;
            }
            found = Some(decode_string(tag, content)?);
        }
    }
    found.filter(|cn| !cn.is_empty() && !cn.chars().any(char::is_control))
}

/// One TLV at the start of `buf`: `(tag, contents, rest)`. Single-byte tags
/// and definite lengths of at most four bytes only.
fn tlv(buf: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = buf.split_first()?;
    if tag & 0x1f == 0x1f {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let (bytes, rest) = rest.split_at(n);
        let len = bytes
            .iter()
            .try_fold(0u64, |acc, &b| Some((acc << 8) | u64::from(b)))?;
        (usize::try_from(len).ok()?, rest)
    };
    if len > rest.len() {
        return None;
    }
    let (contents, rest) = rest.split_at(len);
    Some((tag, contents, rest))
}

/// The contents of a TLV with tag `want` at the start of `buf`, and what follows it.
fn expect(buf: &[u8], want: u8) -> Option<(&[u8], &[u8])> {
    let (tag, contents, rest) = tlv(buf)?;
    (tag == want).then_some((contents, rest))
}

/// A directory string's text.
fn decode_string(tag: u8, content: &[u8]) -> Option<String> {
    match tag {
        // UTF8String
        0x0c => String::from_utf8(content.to_vec()).ok(),
        // PrintableString, IA5String
        0x13 | 0x16 => content
            .is_ascii()
            .then(|| String::from_utf8_lossy(content).into_owned()),
        // TeletexString: in practice Latin-1.
        0x14 => Some(content.iter().map(|&b| char::from(b)).collect()),
        // BMPString: UCS-2 big-endian.
        0x1e => {
            let pairs = content.chunks_exact(2);
            if !pairs.remainder().is_empty() {
                return None;
            }
            let units = pairs.map(|c| u16::from_be_bytes([c[0], c[1]]));
            char::decode_utf16(units)
                .collect::<Result<String, _>>()
                .ok()
        }
        // UniversalString: UCS-4 big-endian.
        0x1c => {
            let quads = content.chunks_exact(4);
            if !quads.remainder().is_empty() {
                return None;
            }
            quads
                .map(|c| char::from_u32(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
                .collect()
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A DER TLV (short or long length form).
    fn der(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        let n = content.len();
        if n < 0x80 {
            v.push(n as u8);
        } else if n < 0x100 {
            v.extend([0x81, n as u8]);
        } else {
            v.extend([0x82, (n >> 8) as u8, n as u8]);
        }
        v.extend_from_slice(content);
        v
    }

    fn attr(oid: &[u8], tag: u8, value: &[u8]) -> Vec<u8> {
        der(
            SET,
            &der(SEQUENCE, &[der(OID, oid), der(tag, value)].concat()),
        )
    }

    /// A certificate-shaped DER whose subject holds `rdns` (each already a SET).
    fn cert_with_subject(rdns: &[Vec<u8>], with_version: bool) -> Vec<u8> {
        let mut tbs = Vec::new();
        if with_version {
            tbs.extend(der(VERSION, &der(INTEGER, &[2])));
        }
        tbs.extend(der(INTEGER, &[0x01, 0x02]));
        tbs.extend(der(SEQUENCE, &der(OID, &[0x2a, 0x86, 0x48])));
        tbs.extend(der(SEQUENCE, &attr(&CN_OID, 0x0c, b"Issuer CA")));
        tbs.extend(der(
            SEQUENCE,
            &[der(0x17, b"250101000000Z"), der(0x17, b"350101000000Z")].concat(),
        ));
        tbs.extend(der(SEQUENCE, &rdns.concat()));
        tbs.extend(der(SEQUENCE, &[0u8; 200])); // a long SubjectPublicKeyInfo stand-in
        der(
            SEQUENCE,
            &[
                der(SEQUENCE, &tbs),
                der(SEQUENCE, &[]),
                der(0x03, &[0, 1, 2]),
            ]
            .concat(),
        )
    }

    const O_OID: [u8; 3] = [0x55, 0x04, 0x0a];

    #[test]
    fn reads_the_subject_cn_not_the_issuers() {
        let c = cert_with_subject(
            &[attr(&O_OID, 0x0c, b"Acme"), attr(&CN_OID, 0x0c, b"alice")],
            true,
        );
        assert_eq!(common_name(&c).as_deref(), Some("alice"));
        assert_eq!(principal_of(&c).as_deref(), Some("User:alice"));
        // v1 certificates have no version field.
        let v1 = cert_with_subject(&[attr(&CN_OID, 0x13, b"bob")], false);
        assert_eq!(common_name(&v1).as_deref(), Some("bob"));
    }

    #[test]
    fn string_types() {
        let cases: Vec<(u8, Vec<u8>, Option<&str>)> = vec![
            (0x0c, "zoë".as_bytes().to_vec(), Some("zoë")),
            (0x13, b"svc-1".to_vec(), Some("svc-1")),
            (0x16, b"ia5".to_vec(), Some("ia5")),
            (0x14, vec![b'z', b'o', 0xeb], Some("zoë")),
            (0x1e, vec![0, b'h', 0, b'i'], Some("hi")),
            (0x1c, vec![0, 0, 0, b'u'], Some("u")),
            (0x1e, vec![0, b'h', 0], None),
            (0x13, vec![b'a', 0xff], None),
            (0x0c, vec![0xff, 0xfe], None),
            (0x04, b"octets".to_vec(), None),
            (0x0c, b"".to_vec(), None),
            (0x0c, b"ev\nil".to_vec(), None),
        ];
        for (tag, value, want) in cases {
            let c = cert_with_subject(&[attr(&CN_OID, tag, &value)], true);
            assert_eq!(common_name(&c).as_deref(), want, "tag {tag:#x} {value:?}");
        }
    }

    #[test]
    fn no_cn_or_two_cns_is_no_principal() {
        let none = cert_with_subject(&[attr(&O_OID, 0x0c, b"Acme")], true);
        assert_eq!(common_name(&none), None);
        let two = cert_with_subject(
            &[attr(&CN_OID, 0x0c, b"alice"), attr(&CN_OID, 0x0c, b"admin")],
            true,
        );
        assert_eq!(common_name(&two), None);
        let empty_subject = cert_with_subject(&[], true);
        assert_eq!(common_name(&empty_subject), None);
    }

    /// Every truncation of a valid certificate, and bytes flipped at every
    /// position, give an answer (usually `None`) and never a panic.
    #[test]
    fn truncated_and_corrupted_input_never_panics() {
        let c = cert_with_subject(&[attr(&CN_OID, 0x0c, b"alice")], true);
        for cut in 0..c.len() {
            // A cut inside the certificate breaks its outer length.
            assert_eq!(common_name(&c[..cut]), None, "cut at {cut}");
        }
        for i in 0..c.len() {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut bad = c.clone();
                bad[i] ^= flip;
                let _ = common_name(&bad);
            }
        }
        // Garbage, indefinite and oversized lengths, high tag numbers.
        for g in [
            &[][..],
            &[0x30],
            &[0x30, 0x80, 0, 0],
            &[0x30, 0x85, 1, 2, 3, 4, 5],
            &[0x30, 0x84, 0xff, 0xff, 0xff, 0xff],
            &[0x3f, 0x01, 0x00],
            &[0xff; 64],
        ] {
            assert_eq!(common_name(g), None);
        }
        // A pseudo-random stream of bytes.
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..2000 {
            let mut buf = vec![0x30u8];
            for _ in 0..64 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                buf.push(x as u8);
            }
            let _ = common_name(&buf);
        }
    }

    #[test]
    fn long_form_lengths() {
        assert_eq!(
            tlv(&[0x04, 0x81, 0x02, 7, 8]),
            Some((0x04, &[7u8, 8][..], &[][..]))
        );
        // Length longer than the buffer.
        assert_eq!(tlv(&[0x04, 0x82, 0x01, 0x00, 1]), None);
    }
}
