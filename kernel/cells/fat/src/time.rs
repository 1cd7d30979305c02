//! Timestamps: the VFS counts nanoseconds since the Unix epoch; FAT stores a local date and time
//! (1980-2107, 2-second resolution for modification, days for access). Keel has no time zones,
//! so FAT times are taken as UTC.

use alloc::sync::Arc;
use core::sync::atomic::{AtomicU64, Ordering};
use fatfs::{Date, DateTime, Time};

const NS: u64 = 1_000_000_000;
const DAY: u64 = 86_400;
/// 1980-01-01T00:00:00Z, the first FAT time.
const FAT_EPOCH: u64 = 315_532_800;
/// 2107-12-31T23:59:59Z, the last.
const FAT_END: u64 = 4_354_819_199;

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date `days` after 1970-01-01 (H. Hinnant's `civil_from_days`), for `days >= 0`.
fn civil_from_days(days: u64) -> (u16, u16, u16) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year as u16, month as u16, day as u16)
}

/// The FAT date and time of `ns` nanoseconds after the epoch, clamped to what FAT can hold.
pub fn to_fat(ns: u64) -> DateTime {
    let secs = (ns / NS).clamp(FAT_EPOCH, FAT_END);
    let millis = if (FAT_EPOCH..FAT_END).contains(&(ns / NS)) {
        ((ns % NS) / 1_000_000) as u16
    } else {
        0
    };
    let (year, month, day) = civil_from_days(secs / DAY);
    let in_day = secs % DAY;
    DateTime::new(
        Date::new(year, month, day),
        Time::new(
            (in_day / 3600) as u16,
            (in_day / 60 % 60) as u16,
            (in_day % 60) as u16,
            millis,
        ),
    )
}

/// Nanoseconds after the epoch of a FAT date (midnight).
pub fn date_to_unix(date: Date) -> u64 {
    // A corrupt entry may hold month 0 or day 31 of February: clamp rather than fail.
    let month = date.month.clamp(1, 12);
    let day = date.day.clamp(1, 31);
    let days = days_from_civil(i64::from(date.year), i64::from(month), i64::from(day));
    u64::try_from(days).unwrap_or(0) * DAY * NS
}

/// Nanoseconds after the epoch of a FAT date and time.
pub fn to_unix(dt: DateTime) -> u64 {
    let t = dt.time;
    let secs =
        u64::from(t.hour.min(23)) * 3600 + u64::from(t.min.min(59)) * 60 + u64::from(t.sec.min(59));
    date_to_unix(dt.date) + secs * NS + u64::from(t.millis.min(999)) * 1_000_000
}

/// The time fatfs stamps entries with: whatever the current operation's `now` is.
#[derive(Clone, Debug, Default)]
pub struct Clock(Arc<AtomicU64>);

impl Clock {
    pub fn set(&self, ns: u64) {
        self.0.store(ns, Ordering::Relaxed);
    }
    fn now(&self) -> DateTime {
        to_fat(self.0.load(Ordering::Relaxed))
    }
}

impl fatfs::TimeProvider for Clock {
    fn get_current_date(&self) -> Date {
        self.now().date
    }
    fn get_current_date_time(&self) -> DateTime {
        self.now()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_dates() {
        // 2024-02-29T13:45:31.250Z
        let ns = 1_709_214_331_250_000_000;
        let dt = to_fat(ns);
        assert_eq!((dt.date.year, dt.date.month, dt.date.day), (2024, 2, 29));
        assert_eq!(
            (dt.time.hour, dt.time.min, dt.time.sec, dt.time.millis),
            (13, 45, 31, 250)
        );
        assert_eq!(to_unix(dt), ns);
        assert_eq!(date_to_unix(dt.date), 1_709_164_800 * NS);
    }

    #[test]
    fn clamps_to_the_fat_range() {
        let early = to_fat(0);
        assert_eq!(
            (early.date.year, early.date.month, early.date.day),
            (1980, 1, 1)
        );
        assert_eq!(to_unix(early), FAT_EPOCH * NS);
        let late = to_fat(u64::MAX);
        assert_eq!(
            (late.date.year, late.date.month, late.date.day),
            (2107, 12, 31)
        );
        assert_eq!(late.time.sec, 59);
    }

    #[test]
    fn round_trips_every_day() {
        for day in (FAT_EPOCH / DAY)..=(FAT_END / DAY) {
            let ns = (day * DAY + 3661) * NS;
            assert_eq!(to_unix(to_fat(ns)), ns, "day {day}");
        }
    }
}
