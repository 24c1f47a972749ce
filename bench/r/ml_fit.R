# One maximum-likelihood reference fit for the benchmarks (bench/run.py): metafor's
# rma.mv (REML) or lme4's lmer (REML), as settings.json says.
# Usage: Rscript ml_fit.R <data.csv> <settings.json> <out_dir>
# Writes estimates.json: the point estimates named as in settings$keep, and the seconds
# the fit itself took.
suppressPackageStartupMessages(library(jsonlite))
args <- commandArgs(trailingOnly = TRUE)
data <- read.csv(args[1])
s <- fromJSON(args[2], simplifyVector = FALSE)
out <- args[3]

if (s$tool == "metafor") {
  suppressPackageStartupMessages(library(metafor))
  random <- eval(parse(text = s$random))
  fit_s <- system.time(fit <- rma.mv(yi, vi, random = random, data = data,
                                     method = "REML"))[["elapsed"]]
  est <- c(list(mu = unname(coef(fit)[1])),
           setNames(as.list(sqrt(fit$sigma2)), unlist(s$keep)[-1]))
} else if (s$tool == "lme4") {
  suppressPackageStartupMessages(library(lme4))
  fit_s <- system.time(fit <- lmer(eval(parse(text = s$formula)), data = data,
                                   REML = TRUE))[["elapsed"]]
  fixed <- as.list(fixef(fit))
  vc <- as.data.frame(VarCorr(fit))
  sds <- setNames(as.list(vc$sdcor), ifelse(is.na(vc$var1), vc$grp,
                  ifelse(is.na(vc$var2), paste0(vc$grp, ":", vc$var1),
                         paste0(vc$grp, ":", vc$var1, ":", vc$var2))))
  est <- c(fixed, sds)
} else {
  stop("unknown tool ", s$tool)
}
write_json(list(fit_s = fit_s, estimates = est), file.path(out, "estimates.json"),
           auto_unbox = TRUE, digits = NA)
