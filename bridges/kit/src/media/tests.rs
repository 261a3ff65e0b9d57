use ruma::{MxcUri, OwnedMxcUri};

use super::{LinkRefusal, LinkSigner, serve::disposition};

fn mxc(s: &str) -> OwnedMxcUri {
    OwnedMxcUri::from(s)
}

/// The query parameters of a link.
fn params(link: &str) -> (u64, String) {
    let query = link.split_once('?').expect("a query").1;
    let mut expires = None;
    let mut sig = None;
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("expires", v)) => expires = Some(v.parse().unwrap()),
            Some(("sig", v)) => sig = Some(v.to_owned()),
            _ => {}
        }
    }
    (expires.unwrap(), sig.unwrap())
}

#[test]
fn a_link_names_the_file_and_verifies_until_it_expires() {
    let signer = LinkSigner::new("secret");
    let file = mxc("mxc://example.org/abcDEF_12-3");
    let link = signer
        .link("https://bridge.example/irc/", &file, 1_000)
        .unwrap();
    assert!(
        link.starts_with(
            "https://bridge.example/irc/media/v1/download/example.org/abcDEF_12-3?expires=1000&sig="
        ),
        "{link}"
    );
    let (expires, sig) = params(&link);
    assert_eq!(signer.verify(&file, expires, &sig, 999), Ok(()));
    assert_eq!(
        signer.verify(&file, expires, &sig, 1_000),
        Err(LinkRefusal::Expired)
    );
    assert_eq!(
        signer.verify(&file, expires, &sig, 5_000),
        Err(LinkRefusal::Expired)
    );
}

#[test]
fn another_file_another_expiry_or_another_key_is_forged() {
    let signer = LinkSigner::new("secret");
    let file = mxc("mxc://example.org/abc");
    let sig = signer.signature(&file, 1_000);
    let other: &MxcUri = <&MxcUri>::from("mxc://example.org/abd");
    assert_eq!(
        signer.verify(other, 1_000, &sig, 0),
        Err(LinkRefusal::Forged)
    );
    assert_eq!(
        signer.verify(&file, 1_001, &sig, 0),
        Err(LinkRefusal::Forged),
        "a later expiry is not ours"
    );
    assert_eq!(
        LinkSigner::new("other key").verify(&file, 1_000, &sig, 0),
        Err(LinkRefusal::Forged)
    );
    // An expired link with a wrong signature says nothing about expiry.
    assert_eq!(
        signer.verify(other, 1_000, &sig, 2_000),
        Err(LinkRefusal::Forged)
    );
    for bad in ["", "not base64!", "AAAA", &sig[..sig.len() - 2]] {
        assert_eq!(
            signer.verify(&file, 1_000, bad, 0),
            Err(LinkRefusal::Forged),
            "{bad}"
        );
    }
    // The signature binds the pair: "ab" until 11 is not "a" until "b11" or alike.
    assert_ne!(
        signer.signature(&mxc("mxc://example.org/ab1"), 1),
        signer.signature(&mxc("mxc://example.org/ab"), 11)
    );
}

#[test]
fn a_bad_mxc_makes_no_link() {
    let signer = LinkSigner::new("secret");
    assert!(signer.link("https://b", &mxc("https://evil/x"), 1).is_err());
    assert!(
        signer
            .link("https://b", &mxc("mxc://example.org"), 1)
            .is_err()
    );
}

#[test]
fn disposition_is_inline_only_for_safe_types_and_names_are_clean() {
    assert_eq!(
        disposition("image/png", Some("cat.png")),
        "inline; filename*=utf-8''cat.png"
    );
    assert_eq!(disposition("text/plain; charset=UTF-8", None), "inline");
    assert_eq!(
        disposition("text/html", Some("page.html")),
        "attachment; filename*=utf-8''page.html"
    );
    assert_eq!(disposition("image/svg+xml", None), "attachment");
    assert_eq!(
        disposition("application/pdf", Some("../a\\b\r\n; x=\"y\" é.pdf")),
        "attachment; filename*=utf-8''.._a_b%3B%20x%3D%22y%22%20%C3%A9.pdf"
    );
}
