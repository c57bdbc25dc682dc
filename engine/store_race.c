/*
 * store_race.c - what both L3 backends do with a namespace race they
 * settled at commit (store.h, "Sharing"): one warning in the store's log,
 * the count in store.races, and the last few kept for `tierfs status`.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "store.h"

void store_base_init(struct store *s)
{
	uint64_t o = 0;

	if (getrandom(&o, sizeof(o), 0) != (ssize_t)sizeof(o)) {
		struct timespec ts;

		clock_gettime(CLOCK_REALTIME, &ts);
		o = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
		o ^= (uint64_t)getpid() << 40;
	}
	o &= INT64_MAX; /* fits SQL's signed 64-bit integers */
	s->origin = o ? o : 1;
	s->feed_keep_seconds = STORE_FEED_KEEP_SECONDS;
	s->feed_keep_records = STORE_FEED_KEEP_RECORDS;
	pthread_mutex_init(&s->race_lock, NULL);
}

const char *store_race_what(enum store_race_kind kind)
{
	switch (kind) {
	case STORE_RACE_REPLACED:
		return "replaced an entry of another writer of the same name "
		       "or item";
	case STORE_RACE_NAME_HELD:
		return "dropped: its name is a directory of another writer "
		       "that has entries";
	case STORE_RACE_RMDIR:
		return "dropped: a removal of a directory another writer put "
		       "entries in";
	case STORE_RACE_CYCLE:
		return "dropped: a move below itself, which would close a "
		       "cycle with another writer's move";
	}
	return "?";
}

void store_race(struct store *s, const char *target,
		enum store_race_kind kind, const struct change *ch,
		uint64_t other)
{
	struct store_race *r;
	char with[48] = "";

	if (other)
		snprintf(with, sizeof(with), " (inode %" PRIu64 ")", other);
	eng_logf(&s->log, LOG_WARNING,
		 "%s '%s': race: the change of inode %" PRIu64
		 " ('%s' in directory %" PRIu64 ") %s%s",
		 s->ops->name, target, ch->ino, ch->deleted ? "" : ch->name,
		 ch->parent, store_race_what(kind), with);
	pthread_mutex_lock(&s->race_lock);
	r = &s->race_recent[s->races % STORE_RACES_RECENT];
	memset(r, 0, sizeof(*r));
	r->kind = kind;
	r->ino = ch->ino;
	r->parent = ch->parent;
	r->other = other;
	snprintf(r->name, sizeof(r->name), "%s", ch->deleted ? "" : ch->name);
	atomic_fetch_add(&s->races, 1);
	pthread_mutex_unlock(&s->race_lock);
}

size_t store_races_recent(struct store *s, struct store_race *out,
			  size_t max, uint64_t *total)
{
	size_t n = 0;
	uint64_t count;

	pthread_mutex_lock(&s->race_lock);
	count = atomic_load(&s->races);
	for (uint64_t i = count; i > 0 && n < max && n < STORE_RACES_RECENT;
	     i--)
		out[n++] = s->race_recent[(i - 1) % STORE_RACES_RECENT];
	pthread_mutex_unlock(&s->race_lock);
	if (total)
		*total = count;
	return n;
}
