/*
 * status.c - what the engine tells about itself: statfs numbers, counters,
 * the status JSON and the Prometheus metrics text.
 */
#include <jansson.h>

#include "eng_int.h"

int eng_statfs(struct eng *e, struct eng_stats *out)
{
	pthread_mutex_lock(&e->lock);
	out->entries = e->fs_entries > 0 ? (uint64_t)e->fs_entries : 0;
	out->bytes = e->fs_bytes > 0 ? (uint64_t)e->fs_bytes : 0;
	pthread_mutex_unlock(&e->lock);
	return 0;
}

static uint64_t ld(atomic_uint_least64_t *v)
{
	return atomic_load_explicit(v, memory_order_relaxed);
}

/* The changes L3 refused for good: how many, where they went, the last
 * ones. Lock held. */
static json_t *quarantine_json(struct eng *e)
{
	uint64_t n = e->quarantined, first;
	json_t *recent = json_array();
	char file[4096 + 32];

	first = n > QUARANTINE_RECENT ? n - QUARANTINE_RECENT : 0;
	for (uint64_t i = first; recent && i < n; i++) {
		const struct quarantined *q =
			&e->quarantine[i % QUARANTINE_RECENT];

		json_array_append_new(recent,
				      json_pack("{s:I, s:s, s:s}", "ino",
						(json_int_t)q->ino, "name",
						q->deleted ? "" : q->name,
						"error", strerror(-q->error)));
	}
	snprintf(file, sizeof(file), "%s/quarantine.log", e->wal_dir);
	return json_pack("{s:I, s:s, s:o*}", "changes", (json_int_t)n, "file",
			 file, "recent", recent);
}

/* The races L3 settled against this mount's batches: count and the last
 * few. */
static json_t *races_json(struct eng *e)
{
	struct store_race r[STORE_RACES_RECENT];
	uint64_t total = 0;
	size_t n = store_races_recent(e->l3, r, STORE_RACES_RECENT, &total);
	json_t *recent = json_array();

	for (size_t i = 0; recent && i < n; i++)
		json_array_append_new(
			recent,
			json_pack("{s:I, s:s, s:I, s:I, s:s}", "ino",
				  (json_int_t)r[i].ino, "name", r[i].name,
				  "parent", (json_int_t)r[i].parent, "other",
				  (json_int_t)r[i].other, "what",
				  store_race_what(r[i].kind)));
	return json_pack("{s:I, s:o*}", "count", (json_int_t)total, "recent",
			 recent);
}

int eng_status_json(struct eng *e, char **out, size_t *len)
{
	struct l1_stats l1s;
	uint64_t now = mono_ns();
	bool l3_down, l2_down;
	json_t *j;
	char *text;

	l1_get_stats(e->l1, &l1s);
	pthread_mutex_lock(&e->lock);
	l3_down = e->l3_failing || breaker_is_open(&e->l3_breaker, now);
	l2_down = e->l2 && breaker_is_open(&e->l2_breaker, now);
	j = json_pack(
		"{s:s, s:{s:s, s:b, s:s?}, s:o, s:{s:I, s:I, s:I}, "
		"s:{s:I, s:I}, s:{s:I, s:I}, s:{s:I, s:I, s:I, s:I, s:I}, "
		"s:{s:b, s:I}, s:{s:I, s:I}}",
		"state", l3_down || l2_down ? "degraded" : "ok", "l3",
		"backend", e->l3->ops->name, "up", !l3_down, "last_error",
		e->l3_failing ? strerror(-e->last_error) : NULL, "l2",
		e->l2 ? json_pack("{s:s, s:b}", "backend", e->l2->ops->name,
				  "up", !l2_down)
		      : json_null(),
		"queue", "changes", (json_int_t)batch_count(&e->batch), "bytes",
		(json_int_t)batch_bytes(&e->batch), "not_persisted",
		(json_int_t)(e->change_seq - e->committed_seq), "wal", "bytes",
		(json_int_t)wal_bytes(e->wal), "max_bytes",
		(json_int_t)e->cfg.wal_max_bytes, "pressure", "dirty_bytes",
		(json_int_t)batch_bytes(&e->batch), "high_water",
		(json_int_t)(e->cfg.batch_flush_bytes * DIRTY_HIGH_FACTOR >
					     DIRTY_HIGH_MIN
				     ? e->cfg.batch_flush_bytes *
					       DIRTY_HIGH_FACTOR
				     : DIRTY_HIGH_MIN),
		"l1", "bytes", (json_int_t)l1s.bytes, "pinned_bytes",
		(json_int_t)l1s.pinned_bytes, "items", (json_int_t)l1s.count,
		"hits", (json_int_t)l1s.hits, "misses", (json_int_t)l1s.misses,
		"filter", "trusted", e->filter_trusted, "names",
		(json_int_t)(e->filter ? cuckoo_count(e->filter) : 0), "feed",
		"seq", (json_int_t)e->feed_seq, "applied",
		(json_int_t)e->feed_applied);
	if (j &&
	    (json_object_set_new(j, "quarantine", quarantine_json(e)) < 0 ||
	     json_object_set_new(j, "races", races_json(e)) < 0)) {
		json_decref(j);
		j = NULL;
	}
	pthread_mutex_unlock(&e->lock);
	if (!j)
		return -ENOMEM;
	text = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
	json_decref(j);
	if (!text)
		return -ENOMEM;
	*len = strlen(text);
	text[*len] = '\n'; /* json_dumps ends with the NUL we overwrite */
	*len += 1;
	*out = text;
	return 0;
}

static void metric(FILE *f, const char *name, const char *type,
		   const char *help)
{
	fprintf(f, "# HELP tierfs_%s %s\n# TYPE tierfs_%s %s\n", name, help,
		name, type);
}

/* metric() and its one value. */
static void metric_u64(FILE *f, const char *name, const char *type,
		       const char *help, uint64_t value)
{
	metric(f, name, type, help);
	fprintf(f, "tierfs_%s %llu\n", name, (unsigned long long)value);
}

static void tier_metrics(FILE *f, struct eng *e)
{
	for (int op = 0; op < OP_COUNT; op++) {
		struct tier_stat *st = &e->tier_stats[op];
		const char *tier, *name = tier_op_name(op, &tier);

		if (op >= OP_L2_GET && !e->l2)
			continue;
		fprintf(f,
			"tierfs_tier_calls_total{tier=\"%s\",op=\"%s\"} %llu\n",
			tier, name, (unsigned long long)ld(&st->calls));
		fprintf(f,
			"tierfs_tier_errors_total{tier=\"%s\",op=\"%s\"} "
			"%llu\n",
			tier, name, (unsigned long long)ld(&st->errors));
		fprintf(f,
			"tierfs_tier_seconds_total{tier=\"%s\",op=\"%s\"} "
			"%.6f\n",
			tier, name, (double)ld(&st->ns) / 1e9);
	}
}

int eng_metrics_text(struct eng *e, char **out, size_t *len)
{
	struct l1_stats l1s;
	char *buf = NULL;
	size_t size = 0;
	FILE *f = open_memstream(&buf, &size);

	if (!f)
		return -ENOMEM;
	l1_get_stats(e->l1, &l1s);
	metric(f, "tier_calls_total", "counter", "calls to a tier, by op");
	metric(f, "tier_errors_total", "counter", "failed calls to a tier");
	metric(f, "tier_seconds_total", "counter", "time spent in a tier");
	tier_metrics(f, e);
	pthread_mutex_lock(&e->lock);
	metric_u64(f, "batches_total", "counter", "batches persisted to L3",
		   e->batches);
	metric_u64(f, "batch_records_total", "counter",
		   "changes in those batches", e->batch_recs);
	metric_u64(f, "batch_last_records", "gauge",
		   "changes in the last batch", e->last_batch);
	metric(f, "queue_changes", "gauge", "changes waiting for L3");
	fprintf(f, "tierfs_queue_changes %zu\n", batch_count(&e->batch));
	metric(f, "queue_bytes", "gauge", "bytes waiting for L3");
	fprintf(f, "tierfs_queue_bytes %zu\n", batch_bytes(&e->batch));
	metric_u64(f, "wal_bytes", "gauge", "bytes in the write-ahead log",
		   wal_bytes(e->wal));
	metric(f, "corrupt_total", "counter",
	       "entries read that broke the contract, not shown");
	fprintf(f, "tierfs_corrupt_total{tier=\"l3\"} %llu\n",
		(unsigned long long)(e->corrupt_rows +
				     atomic_load(&e->l3->corrupt)));
	if (e->l2)
		fprintf(f, "tierfs_corrupt_total{tier=\"l2\"} %llu\n",
			(unsigned long long)atomic_load(&e->l2->corrupt));
	metric_u64(f, "quarantined_total", "counter",
		   "changes L3 refused for good, set aside", e->quarantined);
	metric_u64(
		f, "races_total", "counter",
		"changes L3 dropped or replaced in a race with another writer",
		atomic_load(&e->l3->races));
	metric_u64(f, "feed_seq", "gauge",
		   "the last change-feed record applied", e->feed_seq);
	metric_u64(f, "feed_applied_total", "counter",
		   "other writers' changes applied from the feed",
		   e->feed_applied);
	metric_u64(f, "feed_kept_total", "counter",
		   "of those, met by a change of this mount not yet committed",
		   e->feed_kept);
	metric_u64(f, "feed_resets_total", "counter",
		   "gaps in the feed: everything cached was re-read",
		   e->feed_resets);
	metric_u64(f, "flush_failures_total", "counter", "failed batch writes",
		   e->fail_count);
	metric(f, "l3_up", "gauge", "1 while L3 answers");
	fprintf(f, "tierfs_l3_up %d\n",
		!(e->l3_failing || breaker_is_open(&e->l3_breaker, mono_ns())));
	if (e->l2) {
		metric(f, "l2_up", "gauge", "1 while L2 answers");
		fprintf(f, "tierfs_l2_up %d\n",
			!breaker_is_open(&e->l2_breaker, mono_ns()));
	}
	metric_u64(f, "filter_checks_total", "counter",
		   "lookups that asked the negative-lookup filter",
		   (e->filter_negatives +
		    (e->filter_trusted ? e->l3_lookups : 0)));
	metric_u64(f, "filter_negatives_total", "counter",
		   "lookups the filter answered absent (no L3 query)",
		   e->filter_negatives);
	metric_u64(f, "filter_false_positives_total", "counter",
		   "filter said maybe, L3 said absent",
		   e->filter_false_positives);
	metric_u64(f, "dir_loads_total", "counter",
		   "directory pages read to answer lookups (snapshots)",
		   e->snap_loads);
	metric_u64(f, "dir_snapshot_hits_total", "counter",
		   "lookups a directory snapshot answered found",
		   e->snap_hits);
	metric_u64(f, "dir_snapshot_negatives_total", "counter",
		   "lookups a directory snapshot answered absent",
		   e->snap_negatives);
	metric_u64(f, "dir_snapshot_bytes", "gauge",
		   "memory the directory snapshots hold", e->snap_bytes);
	metric_u64(f, "prefetch_batches_total", "counter",
		   "reads of several files' content in one L3 query",
		   e->prefetch_batches);
	metric_u64(f, "prefetched_total", "counter",
		   "files whose content those reads put in L1", e->prefetched);
	metric_u64(f, "list_prefetches_total", "counter",
		   "a listing's next rows read from L3 in the background",
		   e->list_prefetches);
	metric_u64(f, "list_prefetches_used_total", "counter",
		   "... and taken by the listing (not dropped unused)",
		   e->list_prefetches_used);
	metric_u64(f, "dir_handles", "gauge",
		   "directory handles open: listings in progress",
		   e->dir_handles);
	metric(f, "filter_names", "gauge", "names in the filter");
	fprintf(f, "tierfs_filter_names %zu\n",
		e->filter ? cuckoo_count(e->filter) : 0);
	metric_u64(f, "nodes", "gauge",
		   "entries in the node table (looked up by the kernel, open, "
		   "or not yet persisted)",
		   e->nodes.len);
	metric_u64(f, "open_bytes", "gauge",
		   "bytes the working copies of files open for writing hold "
		   "(at most max_open_bytes)",
		   e->open_bytes);
	pthread_mutex_unlock(&e->lock);
	metric(f, "l1_bytes", "gauge", "content bytes in L1");
	fprintf(f, "tierfs_l1_bytes %zu\n", l1s.bytes);
	metric(f, "l1_pinned_bytes", "gauge", "L1 bytes not yet persisted");
	fprintf(f, "tierfs_l1_pinned_bytes %zu\n", l1s.pinned_bytes);
	metric(f, "l1_items", "gauge", "items in L1");
	fprintf(f, "tierfs_l1_items %zu\n", l1s.count);
	metric_u64(f, "l1_hits_total", "counter", "L1 hits", l1s.hits);
	metric_u64(f, "l1_misses_total", "counter", "L1 misses", l1s.misses);
	metric_u64(f, "l1_evictions_total", "counter", "L1 evictions",
		   l1s.evictions);
	if (fclose(f) != 0) {
		free(buf);
		return -ENOMEM;
	}
	*out = buf;
	*len = size;
	return 0;
}
