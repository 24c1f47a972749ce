# One brms fit for the benchmarks (bench/run.py): the formula, priors and sampler
# settings come from settings.json, so every case uses this one script.
# Usage: Rscript brms_fit.R <data.csv> <settings.json> <out_dir>
# Writes draws.csv (post-warm-up draws of the compared parameters, every chain) and
# timing.json (seconds to compile and to sample, divergences).
suppressPackageStartupMessages({
  library(brms)
  library(rstan)
  library(jsonlite)
})
args <- commandArgs(trailingOnly = TRUE)
data <- read.csv(args[1])
s <- fromJSON(args[2], simplifyVector = FALSE)
out <- args[3]

# Debian's rstan finds the Boost headers only through a folder holding a `boost` link
boost <- file.path(tempdir(), "boost_include")
dir.create(boost, showWarnings = FALSE)
if (!file.exists(file.path(boost, "boost"))) file.symlink("/usr/include/boost", file.path(boost, "boost"))
rstan_options(boost_lib = boost)

formula <- eval(parse(text = s$formula))
priors <- do.call(c, lapply(s$priors, function(p) {
  set_prior(p$prior, class = p$class, coef = if (is.null(p$coef)) "" else p$coef,
            resp = if (is.null(p$resp)) "" else p$resp,
            group = if (is.null(p$group)) "" else p$group)
}))
# compile once (no chains), then sample: the two are timed apart, as for nutpie
compile_s <- system.time(
  empty <- brm(formula, data = data, prior = priors, chains = 0, backend = "rstan")
)[["elapsed"]]
sample_s <- system.time(
  fit <- update(empty, recompile = FALSE, chains = s$chains, iter = s$tune + s$draws,
                warmup = s$tune, cores = s$cores, seed = s$seed, refresh = 0,
                control = list(adapt_delta = s$target_accept))
)[["elapsed"]]
draws <- as.data.frame(as_draws_df(fit))
keep <- c(unlist(s$keep), ".chain", ".iteration")
missing <- setdiff(keep, names(draws))
if (length(missing)) stop("brms has no parameters ", paste(missing, collapse = ", "),
                          "; it has ", paste(names(draws), collapse = ", "))
write.csv(draws[, keep], file.path(out, "draws.csv"), row.names = FALSE)
np <- nuts_params(fit)
write_json(list(compile_s = compile_s, sample_s = sample_s,
                divergences = sum(np$Value[np$Parameter == "divergent__"])),
           file.path(out, "timing.json"), auto_unbox = TRUE)
