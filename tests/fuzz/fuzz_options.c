/*
 * fuzz_options.c - the command line (fs/options.c): tfs_options_parse() on
 * an argv made from the input, and tfs_mask_secrets().
 *
 * Byte 0 picks a mode (low 2 bits) and flags (the rest); the remaining
 * bytes are split on NUL into parts.
 *
 *   mode 0  argv: "tierfs" then the parts, parsed and released (flags set
 *           TIERFS_SQLITE, TIERFS_POSTGRES, TIERFS_REDIS); then each
 *           argument is masked as main() does
 *   mode 1  a URI with a password in its userinfo:
 *             PREFIX SCHEME "://" USER ":" PASSWORD "@" REST
 *   mode 2  a libpq key=value password, as libpq reads one (whitespace
 *           around '=', backslash escapes; quoted with flag bit 0):
 *             PREFIX " password" WS "=" WS VALUE [" " REST]
 *   mode 3  a URI query parameter:
 *             PREFIX "postgresql://h/db?" [PARAMS "&"] "password=" VALUE
 *             ("&" | "#") REST
 *
 * In modes 1-3 the PASSWORD or VALUE parts are made of the bytes the
 * syntax allows there (RFC 3986 userinfo or query bytes; for libpq, any
 * byte, escaped as libpq wants): PREFIX and REST are arbitrary. The
 * invariant (options.h: every password is overwritten with '*'): after
 * tfs_mask_secrets() no byte of the password is left. In every mode,
 * masking only turns bytes into '*'.
 *
 * Parsing prints its complaints to stderr and libfuse logs there too: the
 * harness points the stdio stream stderr at /dev/null. libFuzzer and the
 * sanitizers write their reports on file descriptor 2 (or the FILE libFuzzer
 * opened at startup), so a crash is still reported.
 */
#include <ctype.h>
#include <ftw.h>
#include <string.h>

#include "fuzz.h"
#include "options.h"

#define MAX_PARTS 64

static void quiet_log(enum fuse_log_level level, const char *fmt, va_list ap)
{
}

static char home[] = "/tmp/tierfs-fuzz-options.XXXXXX";

static int remove_one(const char *path, const struct stat *st, int flag,
		      struct FTW *ftw)
{
	return remove(path) < 0 ? -1 : 0;
}

/* Removes $HOME, where parsing made the default directories. */
static void cleanup(void)
{
	nftw(home, remove_one, 16, FTW_DEPTH | FTW_PHYS);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	static char data[64], state[64];
	FILE *null = fopen("/dev/null", "w");

	FUZZ_CHECK(null);
	FUZZ_CHECK(mkdtemp(home));
	atexit(cleanup);
	snprintf(data, sizeof(data), "%s/data", home);
	snprintf(state, sizeof(state), "%s/state", home);
	setenv("HOME", home, 1);
	setenv("XDG_DATA_HOME", data, 1);
	setenv("XDG_STATE_HOME", state, 1);
	unsetenv("TIERFS_SQLITE");
	unsetenv("TIERFS_POSTGRES");
	unsetenv("TIERFS_REDIS");
	fuse_set_log_func(quiet_log);
	stderr = null;
	return 0;
}

/* A growing string, and the spans in it that must be masked. */
struct str {
	char *p;
	size_t len, cap;
	size_t span[2][2];
	int nspans;
};

static void put(struct str *s, const void *b, size_t n)
{
	if (s->len + n + 1 > s->cap) {
		s->cap = 2 * (s->len + n + 1);
		s->p = realloc(s->p, s->cap);
		FUZZ_CHECK(s->p);
	}
	memcpy(s->p + s->len, b, n);
	s->len += n;
	s->p[s->len] = '\0';
}

static void puts_(struct str *s, const char *lit)
{
	put(s, lit, strlen(lit));
}

static void putc_(struct str *s, char c)
{
	put(s, &c, 1);
}

/* Puts @b[0..n), each byte not in @allowed replaced by @instead. */
static void put_mapped(struct str *s, const char *b, size_t n,
		       const char *allowed, char instead)
{
	for (size_t i = 0; i < n; i++)
		putc_(s, strchr(allowed, b[i]) && b[i] ? b[i] : instead);
}

static void span_begin(struct str *s)
{
	s->span[s->nspans][0] = s->len;
}

static void span_end(struct str *s)
{
	s->span[s->nspans++][1] = s->len;
}

#define ALNUM "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
#define UNRESERVED ALNUM "-._~"
#define SUB_DELIMS "!$&'()*+,;="
#define USERINFO UNRESERVED "%" SUB_DELIMS ":" /* RFC 3986 3.2.1 */
#define QUERY UNRESERVED "%" SUB_DELIMS ":@/?" /* RFC 3986 3.4 */

/* Prints @s[0..len) on fd 2, C-escaped, after @what. */
static void show(const char *what, const char *s, size_t len)
{
	dprintf(STDERR_FILENO, "%s \"", what);
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\')
			dprintf(STDERR_FILENO, "%c", c);
		else
			dprintf(STDERR_FILENO, "\\x%02x", c);
	}
	dprintf(STDERR_FILENO, "\"\n");
}

/* Masks a copy of @s and checks that only bytes of @s became '*', and
 * that every byte of its spans did; shows both strings when not. */
static void check_mask(const struct str *s)
{
	char *m = strdup(s->p);
	bool ok;

	FUZZ_CHECK(m);
	tfs_mask_secrets(m);
	ok = strlen(m) == s->len;
	for (size_t i = 0; ok && i < s->len; i++)
		ok = m[i] == s->p[i] || m[i] == '*';
	for (int k = 0; ok && k < s->nspans; k++)
		for (size_t i = s->span[k][0]; ok && i < s->span[k][1]; i++)
			ok = m[i] == '*';
	if (!ok) {
		show("string:", s->p, s->len);
		show("masked:", m, strlen(m));
		for (int k = 0; k < s->nspans; k++)
			show("password:", s->p + s->span[k][0],
			     s->span[k][1] - s->span[k][0]);
	}
	FUZZ_CHECK(ok);
	free(m);
}

struct part {
	const char *p;
	size_t len;
};

static void mode_argv(const struct part *parts, int n, unsigned flags)
{
	char *argv[MAX_PARTS + 2];
	struct fuse_args args;
	struct tfs_options o;
	int argc = 0;

	if (flags & 1)
		setenv("TIERFS_SQLITE", "env.db", 1);
	if (flags & 2)
		setenv("TIERFS_POSTGRES", "host=h password=x", 1);
	if (flags & 4)
		setenv("TIERFS_REDIS", "redis://:pw@h:1/2", 1);
	argv[argc++] = strdup("tierfs");
	for (int i = 0; i < n; i++)
		argv[argc++] = strndup(parts[i].p, parts[i].len);
	argv[argc] = NULL;
	for (int i = 0; i < argc; i++)
		FUZZ_CHECK(argv[i]);

	args = (struct fuse_args)FUSE_ARGS_INIT(argc, argv);
	if (tfs_options_parse(&args, &o) == 0) {
		FUZZ_CHECK(o.show_help || o.eng.sqlite_path || o.eng.postgres);
		FUZZ_CHECK(!(o.eng.sqlite_path && o.eng.postgres));
	}
	tfs_options_release(&o);
	fuse_opt_free_args(&args);

	for (int i = 0; i < argc; i++) {
		struct str s = {0};

		puts_(&s, argv[i]);
		check_mask(&s);
		free(s.p);
		free(argv[i]);
	}
	unsetenv("TIERFS_SQLITE");
	unsetenv("TIERFS_POSTGRES");
	unsetenv("TIERFS_REDIS");
}

/* PREFIX SCHEME "://" USER ":" PASSWORD "@" REST */
static void mode_uri(const struct part *pt, struct str *s, unsigned flags)
{
	put(s, pt[0].p, pt[0].len);
	if (pt[1].len)
		put_mapped(s, pt[1].p, pt[1].len, ALNUM "+-.", 'x');
	else
		puts_(s, flags & 1 ? "redis" : "postgresql");
	puts_(s, "://");
	put_mapped(s, pt[2].p, pt[2].len, UNRESERVED "%" SUB_DELIMS, 'u');
	putc_(s, ':');
	span_begin(s);
	put_mapped(s, pt[3].p, pt[3].len, USERINFO, 'p');
	span_end(s);
	putc_(s, '@');
	put(s, pt[4].p, pt[4].len);
}

/* PREFIX " password" WS "=" WS VALUE [" " REST], VALUE as libpq reads it */
static void mode_conninfo(const struct part *pt, struct str *s, unsigned flags)
{
	static const char ws[] = " \t\n\r\f\v";

	put(s, pt[0].p, pt[0].len);
	puts_(s, " password");
	for (size_t i = 0; i < pt[1].len; i++)
		putc_(s, ws[(unsigned char)pt[1].p[i] % 6]);
	putc_(s, '=');
	for (size_t i = 0; i < pt[2].len; i++)
		putc_(s, ws[(unsigned char)pt[2].p[i] % 6]);
	if (flags & 1) {
		putc_(s, '\'');
		span_begin(s);
		for (size_t i = 0; i < pt[3].len; i++) {
			char c = pt[3].p[i];

			if (c == '\'' || c == '\\')
				putc_(s, '\\');
			putc_(s, c);
		}
		span_end(s);
		putc_(s, '\'');
	} else {
		span_begin(s);
		for (size_t i = 0; i < pt[3].len; i++) {
			char c = pt[3].p[i];

			if (isspace((unsigned char)c) || c == '\\' ||
			    (i == 0 && c == '\''))
				putc_(s, '\\');
			putc_(s, c);
		}
		span_end(s);
	}
	if (pt[4].len) {
		putc_(s, ' ');
		put(s, pt[4].p, pt[4].len);
	}
}

/* PREFIX "postgresql://h/db?" [PARAMS "&"] "password=" VALUE ("&" | "#")
 * REST */
static void mode_query(const struct part *pt, struct str *s, unsigned flags)
{
	put(s, pt[0].p, pt[0].len);
	puts_(s, "postgresql://h/db?");
	if (pt[1].len) {
		put_mapped(s, pt[1].p, pt[1].len, QUERY, 'x');
		putc_(s, '&');
	}
	puts_(s, "password=");
	span_begin(s);
	/* a value holds no '&' (it would end it) and no '#' */
	for (size_t i = 0; i < pt[2].len; i++) {
		char c = pt[2].p[i];

		putc_(s, c && c != '&' && strchr(QUERY, c) ? c : 'v');
	}
	span_end(s);
	putc_(s, flags & 1 ? '#' : '&');
	put(s, pt[3].p, pt[3].len);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct part parts[MAX_PARTS];
	struct str s = {0};
	unsigned mode, flags;
	const char *p, *end;
	int n = 0;

	if (size < 1)
		return 0;
	mode = data[0] & 3;
	flags = data[0] >> 2;
	p = (const char *)data + 1;
	end = (const char *)data + size;
	while (n < MAX_PARTS) {
		const char *nul = memchr(p, '\0', (size_t)(end - p));

		parts[n].p = p;
		parts[n].len = nul ? (size_t)(nul - p) : (size_t)(end - p);
		n++;
		if (!nul)
			break;
		p = nul + 1;
	}
	if (mode == 0) {
		mode_argv(parts, n, flags);
		return 0;
	}
	for (int i = n; i < 5; i++)
		parts[i] = (struct part){"", 0};
	if (mode == 1)
		mode_uri(parts, &s, flags);
	else if (mode == 2)
		mode_conninfo(parts, &s, flags);
	else
		mode_query(parts, &s, flags);
	check_mask(&s);
	free(s.p);
	return 0;
}
