use super::*;
use rand::RngExt;

fn spec() -> Spec {
    Spec {
        kind: "test",
        version: 3,
        record_len: 64,
        records: 100,
        epoch: [7; 16],
        params: vec![("worker", 0), ("snat_ports", 0x8000_ffff)],
    }
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("persist-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d.join("x.state")
}

fn put(r: &mut Region, i: usize, v: u8) {
    let rec = r.record_mut(i).unwrap();
    write(rec, |b| b.fill(v));
}

#[test]
fn fresh_then_restored_with_its_records() {
    let p = tmp("restore");
    let (mut r, how) = Region::open(&p, &spec()).unwrap();
    assert_eq!(how, Opened::Fresh);
    put(&mut r, 3, 0xab);
    put(&mut r, 99, 0xcd);
    put(&mut r, 5, 1);
    clear(r.record_mut(5).unwrap());
    drop(r);
    let (r, how) = Region::open(&p, &spec()).unwrap();
    assert_eq!(how, Opened::Restored);
    assert!(
        read(r.record(3).unwrap())
            .unwrap()
            .iter()
            .all(|b| *b == 0xab)
    );
    assert!(
        read(r.record(99).unwrap())
            .unwrap()
            .iter()
            .all(|b| *b == 0xcd)
    );
    assert!(read(r.record(5).unwrap()).is_none(), "cleared");
    assert!(read(r.record(4).unwrap()).is_none(), "never written");
    assert!(r.record(100).is_none());
    assert_eq!(read(r.record(3).unwrap()).unwrap().len(), 56);
    let _ = std::fs::remove_dir_all(p.parent().unwrap());
}

#[test]
fn a_changed_setting_discards_the_file_naming_it() {
    let p = tmp("param");
    let (mut r, _) = Region::open(&p, &spec()).unwrap();
    put(&mut r, 1, 9);
    drop(r);
    let mut s = spec();
    s.params[1].1 = 0x9000_ffff;
    let (r, how) = Region::open(&p, &s).unwrap();
    match how {
        Opened::Discarded(Mismatch::Field { name, found, want }) => {
            assert_eq!(name, "snat_ports");
            assert_eq!(found, 0x8000_ffffu64.to_string());
            assert_eq!(want, 0x9000_ffffu64.to_string());
        }
        other => panic!("{other:?}"),
    }
    assert!(read(r.record(1).unwrap()).is_none(), "emptied");
    drop(r);
    // The re-initialised file is now valid under the new spec.
    assert_eq!(Region::open(&p, &s).unwrap().1, Opened::Restored);
    let _ = std::fs::remove_dir_all(p.parent().unwrap());
}

#[test]
fn each_header_field_is_checked() {
    let base = spec();
    let bytes = {
        let mut b = vec![0u8; base.file_len()];
        b[..HEADER_LEN].copy_from_slice(&base.header());
        b
    };
    assert_eq!(check(&bytes, &base), Ok(()));
    let cases: Vec<(&str, Spec)> = vec![
        (
            "kind",
            Spec {
                kind: "other",
                ..spec()
            },
        ),
        (
            "version",
            Spec {
                version: 4,
                ..spec()
            },
        ),
        (
            "record_len",
            Spec {
                record_len: 128,
                ..spec()
            },
        ),
        (
            "records",
            Spec {
                records: 101,
                ..spec()
            },
        ),
        (
            "boot",
            Spec {
                epoch: [8; 16],
                ..spec()
            },
        ),
        (
            "worker",
            Spec {
                params: vec![("worker", 1), ("snat_ports", 0x8000_ffff)],
                ..spec()
            },
        ),
        (
            "snat_ports",
            Spec {
                params: vec![("worker", 0)],
                ..spec()
            },
        ),
        (
            "extra",
            Spec {
                params: vec![("worker", 0), ("snat_ports", 0x8000_ffff), ("extra", 1)],
                ..spec()
            },
        ),
    ];
    for (field, s) in cases {
        match check(&bytes, &s) {
            Err(Mismatch::Field { name, .. }) => assert_eq!(name, field),
            other => panic!("{field}: {other:?}"),
        }
    }
}

#[test]
fn torn_foreign_and_truncated_files_are_rejected() {
    let s = spec();
    let mut good = vec![0u8; s.file_len()];
    good[..HEADER_LEN].copy_from_slice(&s.header());
    // A flipped bit in the header.
    let mut b = good.clone();
    b[30] ^= 1;
    assert_eq!(check(&b, &s), Err(Mismatch::Checksum));
    // Not ours.
    let mut b = good.clone();
    b[..8].copy_from_slice(b"\x7fELF\x02\x01\x01\0");
    assert_eq!(check(&b, &s), Err(Mismatch::Magic));
    // Cut short.
    assert!(matches!(
        check(&good[..HEADER_LEN + 10], &s),
        Err(Mismatch::Short { .. })
    ));
    assert!(matches!(
        check(&good[..10], &s),
        Err(Mismatch::Short { .. })
    ));
    // On disk: a torn file is discarded, and the reason says why.
    let p = tmp("torn");
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, &good[..HEADER_LEN + 100]).unwrap();
    let (_, how) = Region::open(&p, &s).unwrap();
    assert!(
        matches!(how, Opened::Discarded(Mismatch::Short { .. })),
        "{how:?}"
    );
    let _ = std::fs::remove_dir_all(p.parent().unwrap());
}

#[test]
fn arbitrary_bytes_are_never_trusted() {
    let s = spec();
    let mut rng = rand::rng();
    for _ in 0..2000 {
        let len = rng.random_range(0..s.file_len() + 64);
        let mut b: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        if rng.random_bool(0.5) && b.len() >= 8 {
            b[..8].copy_from_slice(b"SLUICEST");
        }
        assert!(check(&b, &s).is_err());
        assert!(Region::from_bytes(&s, &b).is_err());
    }
}

#[test]
fn a_torn_record_reads_as_absent() {
    let mut r = Region::anonymous(&spec()).unwrap();
    put(&mut r, 0, 5);
    assert!(read(r.record(0).unwrap()).is_some());
    // Killed after the head word moved, before the tail did.
    let rec = r.record_mut(0).unwrap();
    rec[0] = rec[0].wrapping_add(1);
    assert!(read(r.record(0).unwrap()).is_none());
    // The next whole write makes it valid again.
    put(&mut r, 0, 6);
    assert!(read(r.record(0).unwrap()).unwrap().iter().all(|b| *b == 6));
}

#[test]
fn a_second_mapper_is_refused_with_what_to_do() {
    let p = tmp("twice");
    let (_r, _) = Region::open(&p, &spec()).unwrap();
    let e = Region::open(&p, &spec()).unwrap_err();
    assert!(e.to_string().contains("admin.run_dir"), "{e}");
    let _ = std::fs::remove_dir_all(p.parent().unwrap());
}

#[test]
fn a_bad_spec_is_refused() {
    assert!(Region::anonymous(&Spec { kind: "", ..spec() }).is_err());
    assert!(
        Region::anonymous(&Spec {
            record_len: 4,
            ..spec()
        })
        .is_err()
    );
    assert!(
        Region::anonymous(&Spec {
            params: vec![("a-name-longer-than-24-bytes", 0)],
            ..spec()
        })
        .is_err()
    );
}

#[test]
fn boot_id_is_this_boots() {
    let id = boot_id();
    assert_ne!(id, [0; 16], "/proc/sys/kernel/random/boot_id");
    let s = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(hex, s.trim().replace('-', ""));
}
