// SPDX-License-Identifier: MIT
/*
 * upc-trace-sym.c - name the user-space addresses of a live process, for the
 * backtraces of UPC_DEBUG=dirty-backtrace: /proc/PID/maps says which file
 * and offset an address is at, the file's ELF symbol tables (.symtab, else
 * .dynsym; libelf) say which function.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <gelf.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "upc-trace-sym.h"

struct sym {
	uint64_t addr, size;
	const char *name;
};

struct elf_syms {
	struct elf_syms *next;
	char *path;
	struct sym *syms;
	size_t nsyms;
	GElf_Phdr *phdrs;
	size_t nphdrs;
	char *strings;		/* the names, one allocation */
};

struct vma {
	uint64_t start, end, off;
	char *path;
};

struct proc_maps {
	struct proc_maps *next;
	int pid;
	struct vma *vmas;
	size_t n;
};

static struct elf_syms *elfs;
static struct proc_maps *procs;

static int sym_cmp(const void *a, const void *b)
{
	const struct sym *x = a, *y = b;

	return x->addr < y->addr ? -1 : x->addr > y->addr;
}

static struct elf_syms *elf_load(const char *path)
{
	struct elf_syms *e;
	size_t cap = 0, strsz = 0, strcap = 0;
	Elf_Scn *scn = NULL;
	Elf *elf;
	int fd;
	bool have_symtab = false;

	for (e = elfs; e; e = e->next)
		if (!strcmp(e->path, path))
			return e;
	e = calloc(1, sizeof(*e));
	if (!e)
		return NULL;
	e->path = strdup(path);
	e->next = elfs;
	elfs = e;
	elf_version(EV_CURRENT);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return e;
	elf = elf_begin(fd, ELF_C_READ, NULL);
	if (!elf)
		goto out_close;
	if (elf_getphdrnum(elf, &e->nphdrs) == 0 && e->nphdrs) {
		e->phdrs = calloc(e->nphdrs, sizeof(*e->phdrs));
		for (size_t i = 0; e->phdrs && i < e->nphdrs; i++)
			gelf_getphdr(elf, (int)i, &e->phdrs[i]);
	}
	while ((scn = elf_nextscn(elf, scn)))  {
		GElf_Shdr sh;

		if (gelf_getshdr(scn, &sh) && sh.sh_type == SHT_SYMTAB)
			have_symtab = true;
	}
	/* Two passes: sizes, then names into one buffer (pointers stay valid). */
	for (int pass = 0; pass < 2; pass++) {
		size_t n = 0;

		strsz = 0;
		while ((scn = elf_nextscn(elf, scn))) {
			GElf_Shdr sh;
			Elf_Data *d;

			if (!gelf_getshdr(scn, &sh) ||
			    sh.sh_type != (have_symtab ? SHT_SYMTAB : SHT_DYNSYM) || !sh.sh_entsize)
				continue;
			d = elf_getdata(scn, NULL);
			for (size_t i = 0; d && i < sh.sh_size / sh.sh_entsize; i++) {
				GElf_Sym s;
				const char *name;
				size_t len;

				if (!gelf_getsym(d, (int)i, &s) || GELF_ST_TYPE(s.st_info) != STT_FUNC ||
				    !s.st_value)
					continue;
				name = elf_strptr(elf, sh.sh_link, s.st_name);
				if (!name || !*name)
					continue;
				len = strlen(name) + 1;
				if (pass == 1 && n < cap && strsz + len <= strcap) {
					memcpy(e->strings + strsz, name, len);
					e->syms[n] = (struct sym){ s.st_value, s.st_size, e->strings + strsz };
				}
				n++;
				strsz += len;
			}
		}
		if (pass == 0) {
			cap = n;
			strcap = strsz;
			e->syms = calloc(cap ? cap : 1, sizeof(*e->syms));
			e->strings = malloc(strcap ? strcap : 1);
			if (!e->syms || !e->strings)
				break;
		} else {
			e->nsyms = n < cap ? n : cap;
		}
	}
	if (e->syms)
		qsort(e->syms, e->nsyms, sizeof(*e->syms), sym_cmp);
	elf_end(elf);
out_close:
	close(fd);
	return e;
}

static struct proc_maps *maps_load(int pid, bool reload)
{
	struct proc_maps *p;
	char path[64], line[4096];
	size_t cap = 0;
	FILE *f;

	for (p = procs; p; p = p->next)
		if (p->pid == pid)
			break;
	if (p && !reload)
		return p;
	if (!p) {
		p = calloc(1, sizeof(*p));
		if (!p)
			return NULL;
		p->pid = pid;
		p->next = procs;
		procs = p;
	}
	snprintf(path, sizeof(path), "/proc/%d/maps", pid);
	f = fopen(path, "re");
	if (!f)
		return p;	/* gone: keep what we had */
	for (size_t i = 0; i < p->n; i++)
		free(p->vmas[i].path);
	p->n = 0;
	while (fgets(line, sizeof(line), f)) {
		uint64_t s, e, off;
		char perms[8];
		int pos = 0;

		if (sscanf(line, "%" SCNx64 "-%" SCNx64 " %7s %" SCNx64 " %*s %*s %n", &s, &e, perms, &off,
			   &pos) < 4 || !pos || line[pos] != '/')
			continue;
		line[strcspn(line, "\n")] = '\0';
		if (p->n == cap) {
			struct vma *nv;

			cap = cap ? cap * 2 : 64;
			nv = realloc(p->vmas, cap * sizeof(*nv));
			if (!nv)
				break;
			p->vmas = nv;
		}
		p->vmas[p->n++] = (struct vma){ s, e, off, strdup(line + pos) };
	}
	fclose(f);
	return p;
}

static struct vma *vma_find(struct proc_maps *p, uint64_t ip)
{
	for (size_t i = 0; p && i < p->n; i++)
		if (ip >= p->vmas[i].start && ip < p->vmas[i].end)
			return &p->vmas[i];
	return NULL;
}

void sym_refresh(int pid)
{
	maps_load(pid, true);
}

void sym_load(int pid)
{
	maps_load(pid, false);
}

int sym_name(int pid, uint64_t ip, bool ret_addr, char *buf, size_t len)
{
	struct proc_maps *p = maps_load(pid, false);
	struct vma *v = vma_find(p, ip);
	uint64_t at = ret_addr ? ip - 1 : ip, foff, vaddr = 0;
	const char *base;
	struct elf_syms *e;
	bool found = false;

	if (!v) {
		v = vma_find(maps_load(pid, true), ip);
		if (!v) {
			snprintf(buf, len, "0x%" PRIx64, ip);
			return -1;
		}
	}
	base = strrchr(v->path, '/') ? strrchr(v->path, '/') + 1 : v->path;
	foff = at - v->start + v->off;
	e = elf_load(v->path);
	for (size_t i = 0; e && i < e->nphdrs; i++) {
		const GElf_Phdr *ph = &e->phdrs[i];

		if (ph->p_type == PT_LOAD && foff >= ph->p_offset && foff < ph->p_offset + ph->p_filesz) {
			vaddr = foff - ph->p_offset + ph->p_vaddr;
			found = true;
			break;
		}
	}
	if (found && e->nsyms) {
		size_t lo = 0, hi = e->nsyms;

		while (lo < hi) {
			size_t mid = (lo + hi) / 2;

			if (e->syms[mid].addr <= vaddr)
				lo = mid + 1;
			else
				hi = mid;
		}
		if (lo > 0) {
			const struct sym *s = &e->syms[lo - 1];

			if (vaddr < s->addr + (s->size ? s->size : 1) || !s->size) {
				snprintf(buf, len, "%s+0x%" PRIx64 " (%s)", s->name,
					 vaddr - s->addr + (ret_addr ? 1 : 0), base);
				return 0;
			}
		}
	}
	snprintf(buf, len, "%s+0x%" PRIx64, base, foff + (ret_addr ? 1 : 0));
	return 0;
}
