//! Random sequences of host-interface calls made directly on a [`DriverHost`] (as the canonical
//! ABI would make them), compared with a model of what each call must answer and of the memory
//! it may change. Deterministic: each seed gives one sequence.

mod common;

use std::sync::Arc;

use common::*;
use wasi_dd::bindings::host::wasi_dd::dd::dma::{DmaBuffer, HostDmaBuffer};
use wasi_dd::bindings::host::wasi_dd::dd::mmio::{HostMmioRegion, MmioRegion};
use wasi_dd::bindings::host::wasi_dd::dd::pci::{Device, HostDevice};
use wasi_dd::bindings::host::wasi_dd::dd::ports::{HostPortRange, PortRange};
use wasi_dd::bindings::host::wasi_dd::dd::types::{RegModify, RegPoll, RegRead, RegWrite};
use wasi_dd::types::Access;
use wasi_dd::{BatchError, DriverHost, ErrorCode, Limits, RegOp, Width};
use wasmtime::component::Resource;

const SEEDS: u64 = 48;
const CALLS_PER_SEED: usize = 400;
const LIMITS: Limits = Limits {
    max_dma_buffer: 64 << 10,
    max_dma_total: 160 << 10,
    max_log_bytes: 64,
};
const MSI_END: u64 = MSI_CAPABILITY as u64 + 14;

/// splitmix64.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }

    fn width(&mut self) -> Width {
        self.pick(&[Width::W8, Width::W16, Width::W32, Width::W64])
    }

    /// Offsets around `size`: mostly inside, some at the edges, some absurd.
    fn offset(&mut self, size: u64) -> u64 {
        match self.below(10) {
            0 => size.saturating_sub(self.below(9)),
            1 => size + self.below(16),
            2 => u64::MAX - self.below(8),
            _ => self.below(size),
        }
    }

    fn value(&mut self, width: Width) -> u64 {
        let bits = bytes(width) * 8;
        if self.below(8) == 0 || bits == 64 {
            self.next()
        } else {
            self.next() & ((1 << bits) - 1)
        }
    }
}

fn access(width: Width) -> Access {
    match width {
        Width::W8 => Access::W8,
        Width::W16 => Access::W16,
        Width::W32 => Access::W32,
        Width::W64 => Access::W64,
    }
}

fn bytes(width: Width) -> u64 {
    access(width).bytes()
}

/// What an access of `width` at `offset` into `size` bytes must answer before it happens.
fn expected_check(offset: u64, width: Width, size: u64) -> Result<(), ErrorCode> {
    match offset.checked_add(bytes(width)) {
        Some(end) if end <= size => {}
        _ => return Err(ErrorCode::OutOfRange),
    }
    if !offset.is_multiple_of(bytes(width)) {
        return Err(ErrorCode::Misaligned);
    }
    Ok(())
}

fn fits(value: u64, width: Width) -> Result<(), ErrorCode> {
    if width == Width::W64 || value >> (bytes(width) * 8) == 0 {
        Ok(())
    } else {
        Err(ErrorCode::OutOfRange)
    }
}

fn load(memory: &[u8], offset: u64, width: Width) -> u64 {
    (0..bytes(width)).rev().fold(0, |value, i| {
        (value << 8) | u64::from(memory[(offset + i) as usize])
    })
}

fn store(memory: &mut [u8], offset: u64, width: Width, value: u64) {
    for i in 0..bytes(width) {
        memory[(offset + i) as usize] = (value >> (8 * i)) as u8;
    }
}

/// Register memory and the rules of every register space (`no_w64` for ports).
struct ModelSpace {
    memory: Vec<u8>,
    no_w64: bool,
}

impl ModelSpace {
    fn check(&self, offset: u64, width: Width) -> Result<(), ErrorCode> {
        if self.no_w64 && width == Width::W64 {
            return Err(ErrorCode::Unsupported);
        }
        expected_check(offset, width, self.memory.len() as u64)
    }

    fn read(&self, offset: u64, width: Width) -> Result<u64, ErrorCode> {
        self.check(offset, width)?;
        Ok(load(&self.memory, offset, width))
    }

    fn write(&mut self, offset: u64, width: Width, value: u64) -> Result<(), ErrorCode> {
        self.check(offset, width)?;
        fits(value, width)?;
        store(&mut self.memory, offset, width, value);
        Ok(())
    }

    fn batch(&mut self, ops: &[RegOp]) -> Result<Vec<u64>, BatchError> {
        let mut results = Vec::new();
        for (index, op) in ops.iter().enumerate() {
            let failed = |code| BatchError {
                index: index as u32,
                code,
            };
            match *op {
                RegOp::Read(r) => results.push(self.read(r.offset, r.width).map_err(failed)?),
                RegOp::Write(w) => self.write(w.offset, w.width, w.value).map_err(failed)?,
                RegOp::Modify(m) => {
                    self.check(m.offset, m.width).map_err(failed)?;
                    fits(m.clear, m.width).map_err(failed)?;
                    fits(m.set, m.width).map_err(failed)?;
                    let value = (load(&self.memory, m.offset, m.width) & !m.clear) | m.set;
                    store(&mut self.memory, m.offset, m.width, value);
                }
                RegOp::Poll(p) => {
                    self.check(p.offset, p.width).map_err(failed)?;
                    fits(p.mask, p.width).map_err(failed)?;
                    fits(p.expect, p.width).map_err(failed)?;
                    let value = load(&self.memory, p.offset, p.width);
                    if value & p.mask != p.expect {
                        return Err(failed(ErrorCode::TimedOut));
                    }
                    results.push(value);
                }
                RegOp::Delay(_) => {}
            }
        }
        Ok(results)
    }
}

fn random_ops(rng: &mut Rng, size: u64) -> Vec<RegOp> {
    (0..rng.below(8))
        .map(|_| {
            let width = rng.width();
            let offset = rng.offset(size);
            match rng.below(5) {
                0 => RegOp::Read(RegRead { offset, width }),
                1 => RegOp::Write(RegWrite {
                    offset,
                    width,
                    value: rng.value(width),
                }),
                2 => RegOp::Modify(RegModify {
                    offset,
                    width,
                    clear: rng.value(width),
                    set: rng.value(width),
                }),
                // Timeout 0: exactly one read, so the model knows the answer.
                3 => RegOp::Poll(RegPoll {
                    offset,
                    width,
                    mask: rng.pick(&[0, 0xff, 1]),
                    expect: rng.pick(&[0, 1]),
                    timeout_ns: 0,
                }),
                _ => RegOp::Delay(rng.below(1000)),
            }
        })
        .collect()
}

struct ModelBuffer {
    rep: u32,
    /// `None` once freed.
    space: Option<ModelSpace>,
    size: u64,
}

struct Harness {
    host: DriverHost<FakePlatform>,
    platform: FakePlatform,
    device: u32,
    region: u32,
    ports: u32,
    bar2: ModelSpace,
    port_model: ModelSpace,
    config: [u8; 256],
    buffers: Vec<ModelBuffer>,
    dma_in_use: u64,
    /// (accepted, refused) answers per kind of call, to show both sides were exercised.
    tally: std::collections::BTreeMap<&'static str, (u32, u32)>,
}

fn device(rep: u32) -> Resource<Device> {
    Resource::new_borrow(rep)
}

impl Harness {
    fn new() -> Self {
        let platform = FakePlatform::new();
        let mut host = DriverHost::new(Arc::new(platform.clone()), FakePlatform::function())
            .with_limits(LIMITS);
        let device = host.device().unwrap().rep();
        let region = host.map_bar(self::device(device), 2).unwrap().rep();
        let ports = host.io_bar(self::device(device), 1).unwrap().rep();
        let config = platform.state().config;
        Harness {
            host,
            platform,
            device,
            region,
            ports,
            bar2: ModelSpace {
                memory: vec![0; BAR2_SIZE as usize],
                no_w64: false,
            },
            port_model: ModelSpace {
                memory: vec![0; PORT_COUNT as usize],
                no_w64: true,
            },
            config,
            buffers: Vec::new(),
            dma_in_use: 0,
            tally: Default::default(),
        }
    }

    fn count(&mut self, kind: &'static str, accepted: bool) {
        let entry = self.tally.entry(kind).or_default();
        if accepted {
            entry.0 += 1;
        } else {
            entry.1 += 1;
        }
    }

    fn step(&mut self, rng: &mut Rng) {
        let region = || Resource::<MmioRegion>::new_borrow(self.region);
        match rng.below(12) {
            0 => {
                let (offset, width) = (rng.offset(BAR2_SIZE), rng.width());
                let got = HostMmioRegion::read(&mut self.host, region(), offset, width);
                assert_eq!(got, self.bar2.read(offset, width), "mmio read {offset:#x}");
                self.count("mmio read", got.is_ok());
            }
            1 => {
                let (offset, width) = (rng.offset(BAR2_SIZE), rng.width());
                let value = rng.value(width);
                let got = HostMmioRegion::write(&mut self.host, region(), offset, width, value);
                assert_eq!(got, self.bar2.write(offset, width, value), "mmio write");
                self.count("mmio write", got.is_ok());
            }
            2 => {
                let ops = random_ops(rng, BAR2_SIZE);
                let got = HostMmioRegion::batch(&mut self.host, region(), ops.clone());
                assert_eq!(got, self.bar2.batch(&ops), "mmio batch {ops:?}");
                self.count("mmio batch", got.is_ok());
            }
            3 => {
                let ports = Resource::<PortRange>::new_borrow(self.ports);
                let (offset, width) = (rng.offset(PORT_COUNT) as u32, rng.width());
                if rng.below(2) == 0 {
                    let got = HostPortRange::read(&mut self.host, ports, offset, width);
                    let want = self.port_model.read(offset.into(), width).map(|v| v as u32);
                    assert_eq!(got, want, "port read {offset:#x}");
                    self.count("port read", got.is_ok());
                } else {
                    let value = rng.value(width) as u32;
                    let got = HostPortRange::write(&mut self.host, ports, offset, width, value);
                    let want = self.port_model.write(offset.into(), width, value.into());
                    assert_eq!(got, want, "port write {offset:#x}");
                    self.count("port write", got.is_ok());
                }
            }
            4 => {
                let ports = Resource::<PortRange>::new_borrow(self.ports);
                let ops = random_ops(rng, PORT_COUNT);
                let got = HostPortRange::batch(&mut self.host, ports, ops.clone());
                assert_eq!(got, self.port_model.batch(&ops), "port batch {ops:?}");
                self.count("port batch", got.is_ok());
            }
            5 => self.config_access(rng),
            6 | 7 => self.allocate(rng),
            8 | 9 => self.buffer_access(rng),
            10 => self.buffer_free_or_drop(rng),
            _ => {
                let got = self
                    .host
                    .map_bar(device(self.device), rng.pick(&[0, 1, 2, 3, 9]));
                let code = got.map(|r| r.rep()).err();
                assert!(matches!(
                    code,
                    Some(ErrorCode::InUse | ErrorCode::NoSuchResource) | None
                ));
            }
        }
    }

    fn config_access(&mut self, rng: &mut Rng) {
        let offset = rng.offset(256) as u32;
        let width = rng.width();
        let model_check = || -> Result<(), ErrorCode> {
            if width == Width::W64 {
                return Err(ErrorCode::Unsupported);
            }
            expected_check(offset.into(), width, 256)
        };
        if rng.below(2) == 0 {
            let got = self.host.config_read(device(self.device), offset, width);
            let want = model_check().map(|()| load(&self.config, offset.into(), width) as u32);
            assert_eq!(got, want, "config read {offset:#x}");
            self.count("config read", got.is_ok());
        } else {
            let value = rng.value(width) as u32;
            let got = self
                .host
                .config_write(device(self.device), offset, width, value);
            let want = model_check()
                .and_then(|()| fits(value.into(), width))
                .and_then(|()| {
                    let start = u64::from(offset);
                    let end = start + bytes(width);
                    let msi = MSI_CAPABILITY as u64..MSI_END;
                    if start < 0x40 || (start < msi.end && msi.start < end) {
                        Err(ErrorCode::Denied)
                    } else {
                        Ok(())
                    }
                });
            if want.is_ok() {
                store(&mut self.config, offset.into(), width, value.into());
            }
            assert_eq!(got, want, "config write {offset:#x}");
            self.count("config write", got.is_ok());
        }
    }

    fn allocate(&mut self, rng: &mut Rng) {
        let size = rng.pick(&[0, 1, 17, 4096, 40 << 10, 64 << 10, (64 << 10) + 1, u64::MAX]);
        let align = rng.pick(&[0, 1, 3, 8, 64, 4096, 8192]);
        let got = self
            .host
            .allocate_dma(device(self.device), size, align)
            .map(|r| r.rep());
        let want = if size == 0 || size > LIMITS.max_dma_buffer || !align.is_power_of_two() {
            Err(ErrorCode::OutOfRange)
        } else if align > 4096 {
            Err(ErrorCode::Unsupported)
        } else if self.dma_in_use + size > LIMITS.max_dma_total {
            Err(ErrorCode::OutOfMemory)
        } else {
            Ok(())
        };
        self.count("allocate", got.is_ok());
        match (got, want) {
            (Ok(rep), Ok(())) => {
                let buffer = Resource::<DmaBuffer>::new_borrow(rep);
                let address = self.host.device_address(buffer).unwrap();
                assert_eq!(address % align, 0);
                self.dma_in_use += size;
                self.buffers.push(ModelBuffer {
                    rep,
                    space: Some(ModelSpace {
                        memory: vec![0; size as usize],
                        no_w64: false,
                    }),
                    size,
                });
            }
            (got, want) => assert_eq!(got.map(|_| ()), want, "allocate {size} align {align}"),
        }
    }

    fn buffer_access(&mut self, rng: &mut Rng) {
        if self.buffers.is_empty() {
            return;
        }
        let index = rng.below(self.buffers.len() as u64) as usize;
        let model = &mut self.buffers[index];
        let buffer = || Resource::<DmaBuffer>::new_borrow(model.rep);
        assert_eq!(HostDmaBuffer::size(&mut self.host, buffer()), model.size);
        let offset = rng.offset(model.size.max(1));
        match rng.below(3) {
            0 => {
                let len = rng.pick(&[0, 1, 7, 64, u64::MAX]);
                let got = HostDmaBuffer::read(&mut self.host, buffer(), offset, len);
                let want = match &model.space {
                    None => Err(ErrorCode::StaleHandle),
                    Some(space) => match offset.checked_add(len) {
                        Some(end) if end <= model.size => {
                            Ok(space.memory[offset as usize..end as usize].to_vec())
                        }
                        _ => Err(ErrorCode::OutOfRange),
                    },
                };
                assert_eq!(got, want, "dma read {offset:#x}+{len}");
                self.count("dma read", got.is_ok());
            }
            1 => {
                let data: Vec<u8> = (0..rng.pick(&[0, 1, 5, 33]))
                    .map(|_| rng.next() as u8)
                    .collect();
                let got = HostDmaBuffer::write(&mut self.host, buffer(), offset, data.clone());
                let want = match &mut model.space {
                    None => Err(ErrorCode::StaleHandle),
                    Some(space) => match offset.checked_add(data.len() as u64) {
                        Some(end) if end <= model.size => {
                            space.memory[offset as usize..end as usize].copy_from_slice(&data);
                            Ok(())
                        }
                        _ => Err(ErrorCode::OutOfRange),
                    },
                };
                assert_eq!(got, want, "dma write {offset:#x}");
                self.count("dma write", got.is_ok());
            }
            _ => {
                let ops = random_ops(rng, model.size);
                let got = HostDmaBuffer::batch(&mut self.host, buffer(), ops.clone());
                let want = match &mut model.space {
                    None => Err(BatchError {
                        index: 0,
                        code: ErrorCode::StaleHandle,
                    }),
                    Some(space) => space.batch(&ops),
                };
                assert_eq!(got, want, "dma batch {ops:?}");
                self.count("dma batch", got.is_ok());
            }
        }
    }

    fn buffer_free_or_drop(&mut self, rng: &mut Rng) {
        if self.buffers.is_empty() {
            return;
        }
        let index = rng.below(self.buffers.len() as u64) as usize;
        if rng.below(2) == 0 {
            let model = &mut self.buffers[index];
            let got = self.host.free(Resource::new_borrow(model.rep));
            let want = match model.space.take() {
                Some(_) => {
                    self.dma_in_use -= model.size;
                    Ok(())
                }
                None => Err(ErrorCode::StaleHandle),
            };
            assert_eq!(got, want, "free");
            self.count("dma free", got.is_ok());
        } else {
            let model = self.buffers.swap_remove(index);
            HostDmaBuffer::drop(&mut self.host, Resource::new_own(model.rep)).unwrap();
            if model.space.is_some() {
                self.dma_in_use -= model.size;
            }
        }
    }

    fn check_state(&self) {
        assert_eq!(self.host.dma_in_use(), self.dma_in_use);
        let state = self.platform.state();
        assert_eq!(state.violations, Vec::<String>::new());
        assert_eq!(state.bar2, self.bar2.memory);
        assert_eq!(state.ports, self.port_model.memory);
        // Everything but the command register, which map-bar and io-bar changed.
        assert_eq!(state.config[..4], self.config[..4]);
        assert_eq!(state.config[6..], self.config[6..]);
        let live: u64 = state.dma_live.iter().map(|(_, size)| size).sum();
        assert_eq!(live, self.dma_in_use);
    }
}

#[test]
fn random_call_sequences_match_the_model() {
    let mut tally = std::collections::BTreeMap::<&str, (u32, u32)>::new();
    for seed in 0..SEEDS {
        let mut rng = Rng(seed);
        let mut harness = Harness::new();
        for _ in 0..CALLS_PER_SEED {
            harness.step(&mut rng);
        }
        harness.check_state();
        for (kind, (accepted, refused)) in harness.tally {
            let entry = tally.entry(kind).or_default();
            entry.0 += accepted;
            entry.1 += refused;
        }
    }
    assert_eq!(tally.len(), 13, "{tally:?}");
    for (kind, (accepted, refused)) in &tally {
        assert!(*accepted > 0 && *refused > 0, "{kind}: {tally:?}");
    }
}
