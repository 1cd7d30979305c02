//! The CMOS real-time clock, read once at boot for the wall-clock time.

use x86_64::instructions::port::Port;

fn read_register(register: u8) -> u8 {
    // SAFETY: ports 0x70/0x71 are the CMOS index and data ports; NMI stays enabled (bit 7 clear).
    unsafe {
        Port::<u8>::new(0x70).write(register & 0x7F);
        Port::<u8>::new(0x71).read()
    }
}

fn update_in_progress() -> bool {
    read_register(0x0A) & 0x80 != 0
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Reading([u8; 7]);

fn read_raw() -> Reading {
    while update_in_progress() {
        core::hint::spin_loop();
    }
    Reading([0x00, 0x02, 0x04, 0x07, 0x08, 0x09, 0x32].map(read_register))
}

fn from_bcd(v: u8) -> u8 {
    (v & 0x0F) + (v >> 4) * 10
}

/// Days from 1970-01-01 to the given civil date (proleptic Gregorian).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Seconds since the Unix epoch, per the RTC (which QEMU keeps in UTC).
pub fn unix_seconds() -> u64 {
    // Read until two consecutive readings agree, so no update tears the value.
    let mut reading = read_raw();
    loop {
        let again = read_raw();
        if again == reading {
            break;
        }
        reading = again;
    }
    let status_b = read_register(0x0B);
    let [
        mut sec,
        mut min,
        mut hour,
        mut day,
        mut month,
        mut year,
        mut century,
    ] = reading.0;
    if status_b & 0x04 == 0 {
        sec = from_bcd(sec);
        min = from_bcd(min);
        hour = from_bcd(hour & 0x7F) | (hour & 0x80);
        day = from_bcd(day);
        month = from_bcd(month);
        year = from_bcd(year);
        century = from_bcd(century);
    }
    if status_b & 0x02 == 0 && hour & 0x80 != 0 {
        hour = ((hour & 0x7F) + 12) % 24;
    }
    let century = if (19..=30).contains(&century) {
        century as i64
    } else {
        20
    };
    let days = days_from_civil(century * 100 + year as i64, month as i64, day as i64);
    (days * 86_400 + hour as i64 * 3600 + min as i64 * 60 + sec as i64).max(0) as u64
}

#[cfg(test)]
mod tests {
    use super::days_from_civil;

    #[test]
    fn civil_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(2026, 11, 25), 20_417);
    }
}
