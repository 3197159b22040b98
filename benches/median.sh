# Sourced by the benchmark scripts: the median of the numbers on stdin, one per line
# (the mean of the middle two for an even count); nothing for no numbers.
median() { sort -g | awk '{a[NR] = $1} END {if (NR == 0) exit; m = (NR + 1) / 2; print (NR % 2 ? a[m] : (a[m - 0.5] + a[m + 0.5]) / 2)}'; }
