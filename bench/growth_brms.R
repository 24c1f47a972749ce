# The growth model (observed decomposition) in brms, for bench/growth_vs_brms.py.
# Usage: Rscript growth_brms.R <data.csv> <settings.json> <out_dir>
# Writes draws.csv (every chain's post-warmup draws of the compared parameters) and
# timing.json (wall seconds to compile and to sample, and the divergences).
suppressPackageStartupMessages({
  library(brms)
  library(rstan)
  library(jsonlite)
})
args <- commandArgs(trailingOnly = TRUE)
data <- read.csv(args[1])
s <- fromJSON(args[2])
out <- args[3]

# Debian's rstan finds the Boost headers only through a folder holding a `boost` link
boost <- file.path(tempdir(), "boost_include")
dir.create(boost, showWarnings = FALSE)
if (!file.exists(file.path(boost, "boost"))) file.symlink("/usr/include/boost", file.path(boost, "boost"))
rstan_options(boost_lib = boost)

# The same priors as the PyMC model (models/growth.py), on the same scales
priors <- c(
  set_prior(sprintf("normal(%f, %f)", s$mean_y, 2 * s$s_y), class = "b", coef = "Intercept"),
  set_prior(sprintf("normal(0, %f)", s$s_y), class = "b", coef = "f"),
  set_prior(sprintf("normal(0, %f)", s$s_y), class = "b", coef = "x"),
  set_prior(sprintf("normal(0, %f)", s$s_y), class = "b", coef = "f:x"),
  set_prior(sprintf("normal(0, %f)", s$s_y), class = "b", coef = "base"),
  set_prior(sprintf("normal(0, %f)", s$s_y), class = "b", coef = "f:base"),
  set_prior(sprintf("normal(0, %f)", s$s_y / s$s_a), class = "b", coef = "level_c"),
  set_prior(sprintf("normal(0, %f)", s$s_y / s$s_a), class = "b", coef = "f:trend_c"),
  set_prior(sprintf("normal(0, %f)", s$s_y / s$s_a), class = "b", coef = "within"),
  set_prior(sprintf("normal(0, %f)", s$s_y), class = "sd"),
  set_prior(sprintf("normal(0, %f)", s$s_y), class = "sigma"),
  set_prior("lkj(2)", class = "cor")
)
formula <- bf(y ~ 0 + Intercept + f + x + f:x + base + f:base + level_c + f:trend_c + within
              + (1 + f | patient))
# compile once (no chains), then sample: the two are timed apart, as for nutpie
compile_s <- system.time(
  empty <- brm(formula, data = data, prior = priors, chains = 0, backend = "rstan")
)[["elapsed"]]
sample_s <- system.time(
  fit <- update(empty, recompile = FALSE, chains = s$chains, iter = s$tune + s$draws,
                warmup = s$tune, cores = s$cores, seed = s$seed, refresh = 0,
                control = list(adapt_delta = s$target_accept))
)[["elapsed"]]
draws <- as_draws_df(fit)
keep <- c("b_Intercept", "b_f", "b_x", "b_f:x", "b_base", "b_f:base", "b_level_c",
          "b_f:trend_c", "b_within", "sd_patient__Intercept", "sd_patient__f",
          "cor_patient__Intercept__f", "sigma", ".chain", ".iteration")
write.csv(as.data.frame(draws)[, keep], file.path(out, "draws.csv"), row.names = FALSE)
np <- nuts_params(fit)
write_json(list(compile_s = compile_s, sample_s = sample_s,
                divergences = sum(np$Value[np$Parameter == "divergent__"])),
           file.path(out, "timing.json"), auto_unbox = TRUE)
