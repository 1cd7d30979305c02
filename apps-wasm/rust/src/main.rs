//! rustinfo: a Rust std guest for Keel. Prints its arguments, its environment and the wall-clock
//! time, then counts the primes below N (default 1,000,000) with a sieve of Eratosthenes.
//!
//! Usage: rustinfo [N]
#![forbid(unsafe_code)]

use std::env;
use std::process::ExitCode;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

const DEFAULT_LIMIT: usize = 1_000_000;

fn main() -> ExitCode {
    let args: Vec<String> = env::args().collect();
    let program = args.first().map_or("rustinfo", String::as_str);

    let limit = match args.get(1..).unwrap_or_default() {
        [] => DEFAULT_LIMIT,
        [n] => match n.parse::<usize>() {
            Ok(n) if n <= 1 << 30 => n,
            _ => {
                eprintln!("{program}: invalid limit '{n}' (want an integer from 0 to 2^30)");
                return ExitCode::from(2);
            }
        },
        _ => {
            eprintln!("usage: {program} [N]");
            return ExitCode::from(2);
        }
    };

    println!("args ({}):", args.len());
    for (i, arg) in args.iter().enumerate() {
        println!("  [{i}] {arg:?}");
    }

    let mut vars: Vec<(String, String)> = env::vars().collect();
    vars.sort();
    println!("environment ({}):", vars.len());
    for (key, value) in &vars {
        println!("  {key}={value}");
    }

    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(since_epoch) => {
            let secs = since_epoch.as_secs();
            let (year, month, day) = civil_from_days(secs / 86_400);
            let rem = secs % 86_400;
            println!(
                "time: {secs}.{:09} s since the epoch = {year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
                since_epoch.subsec_nanos(),
                rem / 3600,
                rem / 60 % 60,
                rem % 60
            );
        }
        Err(err) => println!("time: {:?} before the epoch", err.duration()),
    }

    let start = Instant::now();
    let (count, largest) = count_primes_below(limit);
    let elapsed = start.elapsed();
    match largest {
        Some(p) => println!("primes below {limit}: {count} (largest {p}), sieved in {elapsed:.2?}"),
        None => println!("primes below {limit}: none"),
    }
    ExitCode::SUCCESS
}

/// Counts the primes below `limit` and returns the count and the largest one.
fn count_primes_below(limit: usize) -> (usize, Option<usize>) {
    if limit < 3 {
        return (0, None);
    }
    let mut composite = vec![false; limit];
    let mut count = 0;
    let mut largest = None;
    for n in 2..limit {
        if composite[n] {
            continue;
        }
        count += 1;
        largest = Some(n);
        for multiple in (n.saturating_mul(n)..limit).step_by(n) {
            composite[multiple] = true;
        }
    }
    (count, largest)
}

/// Converts days since 1970-01-01 to a proleptic Gregorian (year, month, day).
/// Howard Hinnant's "civil_from_days" algorithm, for non-negative day counts.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primes() {
        assert_eq!(count_primes_below(0), (0, None));
        assert_eq!(count_primes_below(3), (1, Some(2)));
        assert_eq!(count_primes_below(100), (25, Some(97)));
        assert_eq!(count_primes_below(1_000_000), (78_498, Some(999_983)));
    }

    #[test]
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
    }
}
