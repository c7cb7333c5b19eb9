# yaml2sh.awk — turn the YAML a cloud-init NoCloud seed uses into shell assignments (busybox awk).
#
#   awk -v P=U -f yaml2sh.awk user-data > user.sh; . ./user.sh
#
# Every node gets a variable named after its path (P, then each key or list index, joined by "_";
# characters other than [A-Za-z0-9_] in keys become "_"):
#   scalar    P_a_b='value'              (null, ~ and empty -> '')
#   mapping   P_a_K='key1 key2'          (sanitised keys, in document order)
#             P_a_key1__KEY='orig.key'   (only when sanitising changed the key)
#   sequence  P_a_N=3                    (items P_a_0 ... P_a_2)
# Values are single-quoted for sh, so the output is safe to source.
#
# Understood: block mappings and sequences (also PyYAML's indentless "key:\n- item" and compact
# "- - x" / "- k: v" forms), plain scalars (with " #" comments and continuation lines),
# 'single' and "double" quoted scalars (also spanning lines, with YAML folding; double-quoted
# escapes \\ \" \n \t \r \0 \e \xHH \uHHHH \UHHHHHHHH and escaped line breaks), literal and
# folded block scalars (| |- |+ > >- >+, explicit indentation indicator |2), flow sequences and
# mappings [a, 'b,c', {k: v}] (nested, spanning lines), comments, "---".
# Not understood: anchors/aliases (&a, *a), tags (!!str), complex keys (? k), multiple documents.

function sp(n,   s) { s = ""; while (n-- > 0) s = s " "; return s }
function ind_of(s) { match(s, /^ */); return RLENGTH }
function san(k) { gsub(/[^A-Za-z0-9_]/, "_", k); return k }
function shq(v,   out, i) {
  out = ""
  while ((i = index(v, "'")) > 0) { out = out substr(v, 1, i - 1) "'\\''"; v = substr(v, i + 1) }
  return "'" out v "'"
}
function emit(p, v) { print p "=" shq(v) }
function emitn(p, n) { print p "=" n }
function trim(s) { sub(/^[ \t]+/, "", s); sub(/[ \t]+$/, "", s); return s }
function insig(s) { return s ~ /^[ \t]*(#.*)?$/ }
# advance ln to the next significant line; 0 at the end of the document
function next_sig() {
  while (ln <= N) {
    if (insig(L[ln]) || L[ln] ~ /^(---|\.\.\.)[ \t]*(#.*)?$/) { ln++; continue }
    if (L[ln] ~ /^--- /) { L[ln] = substr(L[ln], 5); continue }
    return 1
  }
  return 0
}
function is_item(r) { return r ~ /^-([ \t]|$)/ }
# is r "key: value"? sets KEY and VAL
function keysplit(r,   i, c, rest) {
  c = substr(r, 1, 1)
  if (c == "'" || c == "\"") {
    i = qscan(r, 1)
    if (i < 0) return 0
    rest = substr(r, i + 1)
    if (rest !~ /^[ \t]*:([ \t]|$)/) return 0
    KEY = QV; VAL = rest; sub(/^[ \t]*:/, "", VAL); return 1
  }
  if (index("[]{}#&*!|>%@`,?", c) || is_item(r)) return 0
  i = index(r, ": "); rest = r; sub(/[ \t]+#.*$/, "", rest)
  if (i == 0) { i = index(r, ":\t") }
  if (i == 0) {
    if (rest !~ /:$/) return 0
    i = length(rest)
  }
  KEY = substr(r, 1, i - 1)
  if (KEY ~ /[ \t]#/) return 0
  KEY = trim(KEY); VAL = substr(r, i + 1)
  return 1
}

# --- quoted scalars: qscan(s, i) reads the quoted scalar that starts at s[i] (a quote); returns the
# index of its closing quote (-1 if the string ends first) and leaves the value in QV. A raw "\n" in
# s (a scalar spanning lines) is folded as YAML says: one break -> space, n+1 breaks -> n newlines.
function hexval(h,   i, v, c) {
  v = 0; h = tolower(h)
  for (i = 1; i <= length(h); i++) { c = index("0123456789abcdef", substr(h, i, 1)); if (!c) return -1; v = v * 16 + c - 1 }
  return v
}
function utf8(c) {
  if (c < 128) return sprintf("%c", c)
  if (c < 2048) return sprintf("%c%c", 192 + int(c / 64), 128 + c % 64)
  if (c < 65536) return sprintf("%c%c%c", 224 + int(c / 4096), 128 + int(c / 64) % 64, 128 + c % 64)
  return sprintf("%c%c%c%c", 240 + int(c / 262144), 128 + int(c / 4096) % 64, 128 + int(c / 64) % 64, 128 + c % 64)
}
function qscan(s, i,   q, n, c, v, e, k, nb, h, w) {
  q = substr(s, i, 1); n = length(s); v = ""; i++
  while (i <= n) {
    c = substr(s, i, 1)
    if (c == "\n") {
      # fold: drop trailing blanks before the break and leading blanks after it
      sub(/[ \t]+$/, "", v); nb = 0
      while (i <= n) {
        c = substr(s, i, 1)
        if (c == "\n") { nb++; i++; continue }
        if (c == " " || c == "\t") { i++; continue }
        break
      }
      if (nb == 1) v = v " "; else for (k = 1; k < nb; k++) v = v "\n"
      continue
    }
    if (q == "'") {
      if (c == "'") {
        if (substr(s, i + 1, 1) == "'") { v = v "'"; i += 2; continue }
        QV = v; return i
      }
      v = v c; i++; continue
    }
    if (c == "\"") { QV = v; return i }
    if (c != "\\") { v = v c; i++; continue }
    e = substr(s, i + 1, 1); i += 2
    if (e == "n") v = v "\n"; else if (e == "t" || e == "\t") v = v "\t"; else if (e == "r") v = v "\r"
    else if (e == "\\") v = v "\\"; else if (e == "\"") v = v "\""; else if (e == "/") v = v "/"
    else if (e == " ") v = v " "; else if (e == "0") v = v sprintf("%c", 0); else if (e == "a") v = v sprintf("%c", 7)
    else if (e == "b") v = v sprintf("%c", 8); else if (e == "e") v = v sprintf("%c", 27)
    else if (e == "f") v = v sprintf("%c", 12); else if (e == "v") v = v sprintf("%c", 11)
    else if (e == "N") v = v utf8(133); else if (e == "_") v = v utf8(160)
    else if (e == "L") v = v utf8(8232); else if (e == "P") v = v utf8(8233)
    else if (e == "x" || e == "u" || e == "U") {
      w = (e == "x") ? 2 : (e == "u") ? 4 : 8; h = hexval(substr(s, i, w))
      if (h >= 0) { v = v utf8(h); i += w } else v = v "\\" e
    }
    else if (e == "\n") {   # escaped line break: join, drop the next line's indentation
      while (i <= n && (substr(s, i, 1) == " " || substr(s, i, 1) == "\t")) i++
    }
    else v = v "\\" e
  }
  return -1
}

# --- flow collections: F is the whole text, FP the position
function fws() { while (FP <= FL && substr(F, FP, 1) ~ /[ \t\n]/) FP++ }
function fnode(p, inmap,   c, n, keys, k, sk, j, v) {
  fws(); c = substr(F, FP, 1)
  if (c == "[") {
    FP++; n = 0
    while (FP <= FL) {
      fws(); c = substr(F, FP, 1)
      if (c == "]") { FP++; break }
      if (c == ",") { FP++; continue }
      fnode(p "_" n, 0); n++
      fws(); c = substr(F, FP, 1)
      if (c == ",") FP++; else if (c == "]") { FP++; break } else if (FP <= FL) FP++
    }
    emitn(p "_N", n); return
  }
  if (c == "{") {
    FP++; keys = ""
    while (FP <= FL) {
      fws(); c = substr(F, FP, 1)
      if (c == "}") { FP++; break }
      if (c == ",") { FP++; continue }
      k = fscalar(1); sk = san(k); keys = keys " " sk
      if (sk != k) emit(p "_" sk "__KEY", k)
      fws()
      if (substr(F, FP, 1) == ":") { FP++; fws(); c = substr(F, FP, 1)
        if (c == "," || c == "}") emit(p "_" sk, ""); else fnode(p "_" sk, 1)
      } else emit(p "_" sk, "")
      fws(); c = substr(F, FP, 1)
      if (c == ",") FP++; else if (c == "}") { FP++; break } else if (FP <= FL) FP++
    }
    emit(p "_K", substr(keys, 2)); return
  }
  emit(p, fscalar(0))
}
# a scalar inside a flow collection; key=1: stops at ":"
function fscalar(key,   c, j, v, st) {
  c = substr(F, FP, 1)
  if (c == "'" || c == "\"") {
    j = qscan(F, FP)
    if (j < 0) { v = substr(F, FP + 1); FP = FL + 1; return v }
    FP = j + 1; return QV
  }
  st = FP
  while (FP <= FL) {
    c = substr(F, FP, 1)
    if (c == "," || c == "]" || c == "}") break
    if (c == ":" && (key || index(" \t\n,]}", substr(F, FP + 1, 1)) || FP == FL)) break
    if (c == "#" && FP > st && substr(F, FP - 1, 1) ~ /[ \t\n]/) { FP = FL + 1; break }
    FP++
  }
  v = trim(substr(F, st, FP - st)); gsub(/[ \t]*\n[ \t]*/, " ", v)
  if (v == "~" || v == "null" || v == "Null" || v == "NULL") v = ""
  return v
}
# is the flow text s complete (brackets balanced outside quotes)?
function fbalanced(s,   i, n, c, d, q, pv, ws) {
  d = 0; q = ""; n = length(s); pv = ""; ws = 0
  for (i = 1; i <= n; i++) {
    c = substr(s, i, 1)
    if (q != "") {
      if (q == "\"" && c == "\\") { i++; continue }
      if (c == q) { if (q == "'" && substr(s, i + 1, 1) == "'") { i++; continue } q = ""; pv = c }
      continue
    }
    if (c == " " || c == "\t" || c == "\n") { ws = 1; continue }
    # a quote opens a quoted scalar only where a scalar starts (not inside a plain one: a"b)
    if ((c == "'" || c == "\"") && (pv == "" || index("[{,", pv) || (pv == ":" && ws))) { q = c; continue }
    pv = c; ws = 0
    if (c == "[" || c == "{") d++
    else if (c == "]" || c == "}") { d--; if (d == 0) return 1 }
    else if (c == "#" && i > 1 && substr(s, i - 1, 1) ~ /[ \t\n]/) {   # comment to the end of line
      while (i <= n && substr(s, i, 1) != "\n") i++
    }
  }
  return 0
}

# --- block scalars (| and >); h = header ("|", "|-", ">+", "|2-", ...), pind = parent indent
function blockscalar(p, h, pind,   style, chomp, ex, ci, v, line, li, nl, more, prevmore, first, body, tail) {
  sub(/[ \t]+#.*$/, "", h); h = trim(h)
  style = substr(h, 1, 1); chomp = ""; ex = 0
  if (h ~ /[-+]/) chomp = (h ~ /-/) ? "-" : "+"
  if (match(h, /[1-9]/)) ex = substr(h, RSTART, 1) + 0
  ci = ex ? pind + ex : -1
  v = ""; nl = 0; first = 1; prevmore = 0
  while (ln <= N) {
    line = L[ln]
    if (line ~ /^[ \t]*$/) {
      nl++; ln++; continue
    }
    li = ind_of(line)
    if (ci < 0) { if (li <= pind) break; ci = li }
    if (li < ci) break
    line = substr(line, ci + 1)
    more = (line ~ /^[ \t]/)
    if (first) { while (nl-- > 0) v = v "\n" }
    else if (style == "|") { while (nl-- >= 0) v = v "\n" }
    else {   # folded: a single break between two normal lines is a space
      if (nl == 0 && !more && !prevmore) v = v " "
      else { if (more || prevmore) v = v "\n"; while (nl-- > 0) v = v "\n" }
    }
    v = v line; nl = 0; first = 0; prevmore = more; ln++
  }
  # v holds the content without its final line break; nl = trailing empty lines
  if (first) { v = ""; if (chomp == "+") while (nl-- > 0) v = v "\n"; emit(p, v); return }
  if (chomp == "-") emit(p, v)
  else if (chomp == "+") { tail = "\n"; while (nl-- > 0) tail = tail "\n"; emit(p, v tail) }
  else emit(p, v "\n")
}

# --- block structure
# the node starting at the next significant line, if it is indented at least mind
function node(p, mind,   i, r) {
  if (!next_sig()) { emit(p, ""); return }
  i = ind_of(L[ln]); if (i < mind) { emit(p, ""); return }
  r = substr(L[ln], i + 1)
  if (is_item(r)) { seq(p, i); return }
  if (keysplit(r)) { map(p, i); return }
  ln++; scalar(p, r, i - 1)
}
function map(p, ind,   keys, i, r, k, sk, v) {
  keys = ""
  while (next_sig()) {
    i = ind_of(L[ln]); if (i != ind) break
    r = substr(L[ln], i + 1)
    if (is_item(r) || !keysplit(r)) break
    k = KEY; v = VAL; sk = san(k); keys = keys " " sk
    if (sk != k) emit(p "_" sk "__KEY", k)
    ln++
    value(p "_" sk, v, ind)
  }
  emit(p "_K", substr(keys, 2))
}
function seq(p, ind,   n, i, r, s, c) {
  n = 0
  while (next_sig()) {
    i = ind_of(L[ln]); if (i != ind) break
    r = substr(L[ln], i + 1); if (!is_item(r)) break
    r = substr(r, 2); match(r, /^[ \t]*/); c = ind + 1 + RLENGTH; r = substr(r, RLENGTH + 1)
    if (insig(r)) { ln++; node(p "_" n, ind + 1) }
    else if (is_item(r) || keysplit(r)) { L[ln] = sp(c) r; node(p "_" n, c) }
    else { ln++; scalar(p "_" n, r, ind) }
    n++
  }
  emitn(p "_N", n)
}
# the value after "key:" (v, maybe empty); ind = the mapping's indent
function value(p, v, ind,   i, r) {
  v = trim(v)
  if (insig(v)) {
    if (next_sig()) {
      i = ind_of(L[ln]); r = substr(L[ln], i + 1)
      if (i > ind) { node(p, ind + 1); return }
      if (i == ind && is_item(r)) { seq(p, ind); return }   # PyYAML's indentless sequence
    }
    emit(p, ""); return
  }
  scalar(p, v, ind)
}
# a scalar (or flow collection / block scalar) that starts with text v; the line holding it is
# consumed already; continuation lines must be indented more than pind
function scalar(p, v, pind,   c, s, j, line, i) {
  c = substr(v, 1, 1)
  if (c == "|" || c == ">") { blockscalar(p, v, pind); return }
  if (c == "'" || c == "\"") {
    s = v
    while ((j = qscan(s, 1)) < 0 && ln <= N) { s = s "\n" L[ln]; ln++ }
    emit(p, j < 0 ? substr(s, 2) : QV); return
  }
  if (c == "[" || c == "{") {
    s = v
    while (!fbalanced(s) && ln <= N) { s = s "\n" L[ln]; ln++ }
    F = s; FL = length(s); FP = 1; fnode(p, 0); return
  }
  sub(/[ \t]+#.*$/, "", v); v = trim(v)
  # plain continuation lines (indented more than the parent, not a comment)
  while (ln <= N) {
    line = L[ln]
    if (line ~ /^[ \t]*$/) {   # an empty line inside a plain scalar is a newline, if it goes on
      for (i = ln + 1; i <= N && L[i] ~ /^[ \t]*$/; i++) ;
      if (i <= N && ind_of(L[i]) > pind && L[i] !~ /^[ \t]*#/ && !is_item(substr(L[i], ind_of(L[i]) + 1)) && !keysplit(substr(L[i], ind_of(L[i]) + 1))) {
        for (; ln < i; ln++) v = v "\n"
        continue
      }
      break
    }
    i = ind_of(line)
    if (i <= pind || line ~ /^[ \t]*#/) break
    line = substr(line, i + 1)
    if (is_item(line) || keysplit(line)) break
    sub(/[ \t]+#.*$/, "", line)
    v = (v ~ /\n$/ ? v : v " ") trim(line); ln++
  }
  if (v == "~" || v == "null" || v == "Null" || v == "NULL") v = ""
  emit(p, v)
}

{ sub(/\r$/, ""); L[++N] = $0 }
END { if (P == "") P = "Y"; ln = 1; node(P, 0) }
