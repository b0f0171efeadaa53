//! `stampede-loadgen`: the flash-sale load generator.
//!
//! Not built yet (see its issue). Until it is, it prints its intended usage
//! and exits 2, so no script can mistake it for a run that produced results.

fn main() {
    eprintln!(
        "stampede-loadgen: not implemented yet.\n\n\
         Planned usage: stampede-loadgen --scenario configs/scenarios/spike.toml \
         --target http://127.0.0.1:8080 [--out DIR]\n\n\
         It produces no results today; exiting with status 2."
    );
    std::process::exit(2);
}
