/* httpd: a small HTTP/1.1 file server (GET and HEAD).
 *   httpd [DIR]   serves DIR (default ".") on the listening TCP socket whose descriptor is in the
 *                 environment variable LISTEN_FD; the host creates and binds it (WASI preview1
 *                 cannot create sockets; natively this is systemd-style socket activation).
 * One poll() loop over the listening socket and up to MAX_CONNS non-blocking connections;
 * keep-alive and pipelining; files are streamed in chunks. Each request is logged to standard
 * output as "METHOD PATH STATUS BYTES" (BYTES: body bytes sent) once its response is finished. */

#define _POSIX_C_SOURCE 200809L

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONNS 32
#define REQUEST_MAX 8192
#define CHUNK (32 * 1024)
#define CHUNKS_PER_TURN 8
#define IDLE_TIMEOUT_MS 60000
#define LINGER_TIMEOUT_MS 2000
#define LINGER_MAX (64 * 1024)
#define LOG_PATH_MAX 256
#define CONTENT_LENGTH_MAX ((uint64_t)1 << 62)

#ifdef __wasi__
/* wasi-libc's send() rejects any flag; WASI has no SIGPIPE anyway. */
#define SEND_FLAGS 0
#else
#define SEND_FLAGS MSG_NOSIGNAL
#endif

struct buf {
    char *data;
    size_t len, cap;
    bool failed;
};

enum state { FREE, READING, WRITING, LINGERING };

struct conn {
    enum state state;
    int fd;
    int64_t deadline;
    char in[REQUEST_MAX];
    size_t in_len;
    uint64_t skip;       /* request body bytes still to discard */
    bool peer_done;      /* the client has shut down its sending side */
    size_t lingered;
    /* the response being sent: c->out from out_pos, then file_left bytes of file */
    struct buf out;
    size_t out_pos, head_left;
    int file;
    uint64_t file_left;
    bool head_only, close_after, keep_alive_header;
    /* for the log line */
    int status;
    uint64_t body_sent;
    char method[16];
    char path[LOG_PATH_MAX + 4];
};

static struct conn conns[MAX_CONNS];
static int active;
static int listen_fd;
static bool listen_nonblocking;
static int64_t accept_paused_until;
static const char *root;
static char *fs_path;      /* root + request path (+ "/index.html") */
static char url_path[REQUEST_MAX + 1];

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- growable buffers ------------------------------------------------------------------------ */

static void buf_reserve(struct buf *b, size_t extra) {
    if (b->failed)
        return;
    if (extra > SIZE_MAX - b->len) {
        b->failed = true;
        return;
    }
    size_t need = b->len + extra;
    if (need <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    char *data = realloc(b->data, cap);
    if (data == NULL) {
        b->failed = true;
        return;
    }
    b->data = data;
    b->cap = cap;
}

static void buf_add(struct buf *b, const char *s, size_t n) {
    buf_reserve(b, n);
    if (b->failed)
        return;
    memcpy(b->data + b->len, s, n);
    b->len += n;
}

static void buf_str(struct buf *b, const char *s) { buf_add(b, s, strlen(s)); }

static void buf_printf(struct buf *b, const char *format, ...) {
    va_list args;
    va_start(args, format);
    int n = vsnprintf(NULL, 0, format, args);
    va_end(args);
    if (n < 0) {
        b->failed = true;
        return;
    }
    buf_reserve(b, (size_t)n + 1);
    if (b->failed)
        return;
    va_start(args, format);
    vsnprintf(b->data + b->len, (size_t)n + 1, format, args);
    va_end(args);
    b->len += (size_t)n;
}

/* Percent-encodes everything but unreserved characters and '/'. */
static void buf_url(struct buf *b, const char *s) {
    static const char hex[] = "0123456789ABCDEF";
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
            strchr("-._~/", ch) != NULL) {
            buf_add(b, s, 1);
        } else {
            char esc[3] = {'%', hex[ch >> 4], hex[ch & 15]};
            buf_add(b, esc, 3);
        }
    }
}

static void buf_html(struct buf *b, const char *s) {
    for (; *s; s++) {
        switch (*s) {
        case '&': buf_str(b, "&amp;"); break;
        case '<': buf_str(b, "&lt;"); break;
        case '>': buf_str(b, "&gt;"); break;
        case '"': buf_str(b, "&quot;"); break;
        case '\'': buf_str(b, "&#39;"); break;
        default: buf_add(b, s, 1);
        }
    }
}

/* ---- connections ----------------------------------------------------------------------------- */

static void log_request(struct conn *c) {
    printf("%s %s %d %llu\n", c->method, c->path, c->status, (unsigned long long)c->body_sent);
}

static void close_file(struct conn *c) {
    if (c->file >= 0)
        close(c->file);
    c->file = -1;
    c->file_left = 0;
}

static void close_conn(struct conn *c) {
    if (c->state == WRITING)
        log_request(c);
    close_file(c);
    close(c->fd);
    free(c->out.data);
    c->out = (struct buf){0};
    c->state = FREE;
    c->fd = -1;
    active--;
    accept_paused_until = 0;
}

static void consume(struct conn *c, size_t n) {
    memmove(c->in, c->in + n, c->in_len - n);
    c->in_len -= n;
}

static const char *reason(int status) {
    switch (status) {
    case 200: return "OK";
    case 301: return "Moved Permanently";
    case 400: return "Bad Request";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 414: return "URI Too Long";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
    }
}

/* Puts the status line and headers in c->out; the body (if any) is appended by the caller or
 * comes from c->file. */
static void start_response(struct conn *c, int status, const char *type, uint64_t length,
                           const char *extra_headers) {
    char date[64];
    time_t t = time(NULL);
    struct tm tm;
    if (gmtime_r(&t, &tm) == NULL || strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", &tm) == 0)
        date[0] = '\0';
    c->status = status;
    c->out.len = 0;
    c->out_pos = 0;
    c->body_sent = 0;
    buf_printf(&c->out, "HTTP/1.1 %d %s\r\nServer: keel-httpd\r\n", status, reason(status));
    if (date[0] != '\0')
        buf_printf(&c->out, "Date: %s\r\n", date);
    buf_printf(&c->out, "Content-Type: %s\r\nContent-Length: %llu\r\n", type,
               (unsigned long long)length);
    if (c->close_after)
        buf_str(&c->out, "Connection: close\r\n");
    else if (c->keep_alive_header)
        buf_str(&c->out, "Connection: keep-alive\r\n");
    if (extra_headers != NULL)
        buf_str(&c->out, extra_headers);
    buf_str(&c->out, "\r\n");
    c->head_left = c->out.len;
    c->state = WRITING;
}

static void simple_response(struct conn *c, int status, const char *extra_headers) {
    char body[64];
    int n = snprintf(body, sizeof body, "%d %s\n", status, reason(status));
    start_response(c, status, "text/plain; charset=utf-8", (uint64_t)n, extra_headers);
    if (!c->head_only)
        buf_add(&c->out, body, (size_t)n);
}

static void error_response(struct conn *c, int status) {
    c->close_after = true;
    simple_response(c, status, NULL);
}

static const char *content_type(const char *path) {
    static const struct {
        const char *ext, *type;
    } types[] = {
        {"html", "text/html; charset=utf-8"}, {"htm", "text/html; charset=utf-8"},
        {"txt", "text/plain; charset=utf-8"}, {"css", "text/css; charset=utf-8"},
        {"js", "text/javascript; charset=utf-8"}, {"mjs", "text/javascript; charset=utf-8"},
        {"json", "application/json"}, {"png", "image/png"}, {"jpg", "image/jpeg"},
        {"jpeg", "image/jpeg"}, {"gif", "image/gif"}, {"svg", "image/svg+xml"},
        {"wasm", "application/wasm"},
    };
    const char *slash = strrchr(path, '/');
    const char *dot = strrchr(slash ? slash : path, '.');
    if (dot != NULL)
        for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
            if (strcasecmp(dot + 1, types[i].ext) == 0)
                return types[i].type;
    return "application/octet-stream";
}

static int compare_names(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* An HTML list of the directory fs_path (shown as url_path); 0, or an HTTP status. */
static int directory_listing(struct buf *body) {
    DIR *dir = opendir(fs_path);
    if (dir == NULL)
        return errno == EACCES ? 403 : 404;
    char **names = NULL;
    size_t count = 0, capacity = 0;
    bool failed = false;
    struct dirent *entry;
    while (!failed && (entry = readdir(dir)) != NULL) {
        if (entry->d_name[0] == '.')
            continue;
        if (count == capacity) {
            capacity = capacity ? 2 * capacity : 64;
            char **grown = realloc(names, capacity * sizeof *names);
            if (grown == NULL) {
                failed = true;
                break;
            }
            names = grown;
        }
        if ((names[count] = strdup(entry->d_name)) == NULL)
            failed = true;
        else
            count++;
    }
    closedir(dir);
    if (!failed) {
        qsort(names, count, sizeof *names, compare_names);
        bool top = strcmp(url_path, "/") == 0;
        buf_str(body, "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Index of ");
        buf_html(body, url_path);
        buf_str(body, top ? "</title></head>\n<body><h1>Index of " : "/</title></head>\n<body><h1>Index of ");
        buf_html(body, url_path);
        buf_str(body, top ? "</h1>\n<ul>\n" : "/</h1>\n<ul>\n<li><a href=\"../\">../</a></li>\n");
        size_t dir_len = strlen(fs_path);
        for (size_t i = 0; i < count; i++) {
            struct stat st;
            snprintf(fs_path + dir_len, NAME_MAX + 2, "/%s", names[i]);
            bool is_dir = stat(fs_path, &st) == 0 && S_ISDIR(st.st_mode);
            buf_str(body, "<li><a href=\"");
            buf_url(body, names[i]);
            buf_str(body, is_dir ? "/\">" : "\">");
            buf_html(body, names[i]);
            buf_str(body, is_dir ? "/</a></li>\n" : "</a></li>\n");
        }
        fs_path[dir_len] = '\0';
        buf_str(body, "</ul></body></html>\n");
    }
    for (size_t i = 0; i < count; i++)
        free(names[i]);
    free(names);
    return failed || body->failed ? 500 : 0;
}

/* Opens fs_path (a regular file) and starts a 200 response streaming it; 0, or an HTTP status. */
static int serve_file(struct conn *c) {
    int fd = open(fs_path, O_RDONLY);
    if (fd < 0)
        return errno == EACCES ? 403 : (errno == ENOENT || errno == ENOTDIR) ? 404 : 500;
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return 403;
    }
    start_response(c, 200, content_type(fs_path), (uint64_t)st.st_size, NULL);
    if (c->head_only || st.st_size == 0) {
        close(fd);
    } else {
        c->file = fd;
        c->file_left = (uint64_t)st.st_size;
    }
    return 0;
}

static int hex_value(char ch) {
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if ((ch | 0x20) >= 'a' && (ch | 0x20) <= 'f')
        return (ch | 0x20) - 'a' + 10;
    return -1;
}

/* Decodes and normalises the request target's path into url_path: "/" or "/seg/seg", no empty,
 * "." or ".." segments; *slash tells whether the path ended with '/'. 0, or an HTTP status. */
static int decode_target(const char *target, size_t len, bool *slash) {
    static char decoded[REQUEST_MAX + 1];
    const char *end = target + len;
    size_t scheme = len >= 7 && strncasecmp(target, "http://", 7) == 0    ? 7
                    : len >= 8 && strncasecmp(target, "https://", 8) == 0 ? 8
                                                                          : 0;
    if (scheme > 0) {
        target += scheme;
        while (target < end && *target != '/' && *target != '?' && *target != '#')
            target++;
        if (target == end || *target != '/')
            target = "/", end = target + 1;
    }
    if (target == end || *target != '/')
        return 400;
    size_t n = 0;
    for (const char *p = target; p < end && *p != '?' && *p != '#'; p++) {
        char ch = *p;
        if (ch == '%') {
            int hi = p + 2 < end ? hex_value(p[1]) : -1;
            int lo = p + 2 < end ? hex_value(p[2]) : -1;
            if (hi < 0 || lo < 0 || (hi == 0 && lo == 0))
                return 400;
            ch = (char)(hi << 4 | lo);
            p += 2;
        }
        decoded[n++] = ch;
    }
    *slash = decoded[n - 1] == '/';
    size_t out = 0;
    for (size_t i = 0; i < n;) {
        while (i < n && decoded[i] == '/')
            i++;
        size_t start = i;
        while (i < n && decoded[i] != '/')
            i++;
        size_t segment = i - start;
        if (segment == 0 || (segment == 1 && decoded[start] == '.'))
            continue;
        if (segment == 2 && decoded[start] == '.' && decoded[start + 1] == '.')
            return 403;
        url_path[out++] = '/';
        memcpy(url_path + out, decoded + start, segment);
        out += segment;
    }
    if (out == 0)
        url_path[out++] = '/';
    url_path[out] = '\0';
    return 0;
}

/* Answers a GET or HEAD for the target; 0, or an HTTP status for an error response. */
static int resolve(struct conn *c, const char *target, size_t target_len) {
    bool slash;
    int status = decode_target(target, target_len, &slash);
    if (status != 0)
        return status;
    sprintf(fs_path, "%s%s", root, url_path);
    struct stat st;
    if (stat(fs_path, &st) != 0)
        return errno == EACCES ? 403 : 404;
    if (S_ISREG(st.st_mode))
        return serve_file(c);
    if (!S_ISDIR(st.st_mode))
        return 403;
    if (!slash && strcmp(url_path, "/") != 0) {
        struct buf location = {0};
        buf_str(&location, "Location: ");
        buf_url(&location, url_path);
        buf_str(&location, "/\r\n");
        buf_add(&location, "", 1);
        if (location.failed)
            return 500;
        simple_response(c, 301, location.data);
        free(location.data);
        return 0;
    }
    size_t dir_len = strlen(fs_path);
    strcpy(fs_path + dir_len, "/index.html");
    if (stat(fs_path, &st) == 0 && S_ISREG(st.st_mode)) {
        status = serve_file(c);
        if (status != 404)
            return status;
    }
    fs_path[dir_len] = '\0';
    struct buf body = {0};
    status = directory_listing(&body);
    if (status == 0) {
        start_response(c, 200, "text/html; charset=utf-8", body.len, NULL);
        if (!c->head_only)
            buf_add(&c->out, body.data, body.len);
    }
    free(body.data);
    return status;
}

static bool is_tchar(unsigned char ch) {
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           (ch != '\0' && strchr("!#$%&'*+-.^_`|~", ch) != NULL);
}

/* The next line of head[*pos..end) without its "\n" or "\r\n"; false if it holds a stray CR. */
static bool next_line(const char *head, size_t *pos, const char **line, size_t *len) {
    const char *start = head + *pos;
    const char *nl = strchr(start, '\n');
    size_t n = (size_t)(nl - start);
    *pos += n + 1;
    if (n > 0 && start[n - 1] == '\r')
        n--;
    *line = start;
    *len = n;
    return memchr(start, '\r', n) == NULL;
}

/* Does `value` (a comma-separated list) contain `token`, case-insensitively? */
static bool has_token(const char *value, size_t len, const char *token) {
    size_t token_len = strlen(token);
    size_t i = 0;
    while (i < len) {
        while (i < len && (value[i] == ' ' || value[i] == '\t' || value[i] == ','))
            i++;
        size_t start = i;
        while (i < len && value[i] != ',')
            i++;
        size_t stop = i;
        while (stop > start && (value[stop - 1] == ' ' || value[stop - 1] == '\t'))
            stop--;
        if (stop - start == token_len && strncasecmp(value + start, token, token_len) == 0)
            return true;
    }
    return false;
}

/* Handles the request whose head (request line and headers, NUL-free) is c->in[0..head_len). */
static void handle_request(struct conn *c, size_t head_len) {
    char head[REQUEST_MAX + 1];
    memcpy(head, c->in, head_len);
    head[head_len] = '\0';
    consume(c, head_len);

    strcpy(c->method, "-");
    strcpy(c->path, "-");
    c->head_only = false;
    c->close_after = false;
    c->keep_alive_header = false;
    if (memchr(head, '\0', head_len) != NULL) {
        error_response(c, 400);
        return;
    }

    size_t pos = 0, len;
    const char *line;
    /* request line: METHOD SP TARGET SP HTTP/D.D */
    if (!next_line(head, &pos, &line, &len)) {
        error_response(c, 400);
        return;
    }
    const char *space = memchr(line, ' ', len);
    size_t method_len = space ? (size_t)(space - line) : 0;
    bool valid = method_len > 0 && method_len < sizeof c->method;
    for (size_t i = 0; valid && i < method_len; i++)
        valid = is_tchar((unsigned char)line[i]);
    const char *target = valid ? space + 1 : line;
    space = valid ? memchr(target, ' ', len - method_len - 1) : NULL;
    size_t target_len = space ? (size_t)(space - target) : 0;
    valid = target_len > 0;
    for (size_t i = 0; valid && i < target_len; i++)
        valid = (unsigned char)target[i] > ' ' && (unsigned char)target[i] < 0x7f;
    const char *version = target + target_len + 1;
    if (!valid || (size_t)(line + len - version) != 8 || strncmp(version, "HTTP/", 5) != 0 ||
        version[5] < '0' || version[5] > '9' || version[6] != '.' || version[7] < '0' ||
        version[7] > '9') {
        error_response(c, 400);
        return;
    }
    memcpy(c->method, line, method_len);
    c->method[method_len] = '\0';
    if (target_len > LOG_PATH_MAX) {
        memcpy(c->path, target, LOG_PATH_MAX);
        strcpy(c->path + LOG_PATH_MAX, "...");
    } else {
        memcpy(c->path, target, target_len);
        c->path[target_len] = '\0';
    }
    if (version[5] != '1') {
        error_response(c, 505);
        return;
    }
    bool http11 = version[7] != '0';

    /* headers */
    bool conn_close = false, conn_keep_alive = false, chunked = false, have_length = false;
    uint64_t length = 0;
    int hosts = 0;
    while (pos < head_len) {
        if (!next_line(head, &pos, &line, &len)) {
            error_response(c, 400);
            return;
        }
        if (len == 0)
            break;
        size_t name_len = 0;
        while (name_len < len && is_tchar((unsigned char)line[name_len]))
            name_len++;
        if (name_len == 0 || name_len == len || line[name_len] != ':') {
            error_response(c, 400);
            return;
        }
        const char *value = line + name_len + 1, *value_end = line + len;
        while (value < value_end && (*value == ' ' || *value == '\t'))
            value++;
        while (value_end > value && (value_end[-1] == ' ' || value_end[-1] == '\t'))
            value_end--;
        for (const char *p = value; p < value_end; p++) {
            unsigned char ch = (unsigned char)*p;
            if ((ch < ' ' && ch != '\t') || ch == 0x7f) {
                error_response(c, 400);
                return;
            }
        }
        size_t value_len = (size_t)(value_end - value);
        if (name_len == 10 && strncasecmp(line, "connection", 10) == 0) {
            conn_close |= has_token(value, value_len, "close");
            conn_keep_alive |= has_token(value, value_len, "keep-alive");
        } else if (name_len == 14 && strncasecmp(line, "content-length", 14) == 0) {
            uint64_t n = 0;
            for (const char *p = value; p < value_end; p++) {
                if (*p < '0' || *p > '9' || n > CONTENT_LENGTH_MAX / 10) {
                    error_response(c, 400);
                    return;
                }
                n = n * 10 + (uint64_t)(*p - '0');
            }
            if (value_len == 0 || (have_length && n != length)) {
                error_response(c, 400);
                return;
            }
            have_length = true;
            length = n;
        } else if (name_len == 17 && strncasecmp(line, "transfer-encoding", 17) == 0) {
            chunked = true;
        } else if (name_len == 4 && strncasecmp(line, "host", 4) == 0) {
            hosts++;
        }
    }
    if (hosts > 1 || (http11 && hosts == 0)) {
        error_response(c, 400);
        return;
    }
    if (chunked) { /* the body's framing is unknown to us: answer and close */
        error_response(c, 501);
        return;
    }
    c->close_after = conn_close || (!http11 && !conn_keep_alive);
    c->keep_alive_header = !http11 && !c->close_after;
    c->skip = length;

    if (strcmp(c->method, "GET") != 0 && strcmp(c->method, "HEAD") != 0) {
        simple_response(c, 405, "Allow: GET, HEAD\r\n");
        return;
    }
    c->head_only = strcmp(c->method, "HEAD") == 0;
    int status = resolve(c, target, target_len);
    if (status == 400)
        error_response(c, status);
    else if (status != 0)
        simple_response(c, status, NULL);
}

/* Finds the end of a request head in c->in: true with *head_len set, or false (incomplete);
 * *line_done tells whether the request line is complete. */
static bool find_head(const struct conn *c, size_t *head_len, bool *line_done) {
    size_t line_start = 0;
    *line_done = false;
    for (size_t i = 0; i < c->in_len; i++) {
        if (c->in[i] != '\n')
            continue;
        size_t n = i - line_start;
        if (*line_done && (n == 0 || (n == 1 && c->in[line_start] == '\r'))) {
            *head_len = i + 1;
            return true;
        }
        *line_done = true;
        line_start = i + 1;
    }
    return false;
}

/* Takes the next request from c->in; true if a response is now being written, false if more
 * input is needed (or the connection was closed). */
static bool parse_next(struct conn *c) {
    if (c->skip > 0) {
        size_t n = c->in_len < c->skip ? c->in_len : (size_t)c->skip;
        consume(c, n);
        c->skip -= n;
        if (c->skip > 0) {
            if (c->peer_done)
                close_conn(c);
            return false;
        }
    }
    size_t blank = 0;
    while (blank < c->in_len && (c->in[blank] == '\r' || c->in[blank] == '\n'))
        blank++;
    consume(c, blank);
    if (c->in_len == 0) {
        if (c->peer_done)
            close_conn(c);
        return false;
    }
    size_t head_len;
    bool line_done;
    if (find_head(c, &head_len, &line_done)) {
        handle_request(c, head_len);
    } else if (c->in_len == REQUEST_MAX) {
        strcpy(c->method, "-");
        strcpy(c->path, "-");
        c->head_only = false;
        c->in_len = 0;
        error_response(c, line_done ? 431 : 414);
    } else {
        if (c->peer_done)
            close_conn(c);
        return false;
    }
    if (c->out.failed) {
        fprintf(stderr, "httpd: out of memory\n");
        close_conn(c);
        return false;
    }
    return true;
}

/* Sends what it can of the response; true when all of it has been sent. */
static bool write_some(struct conn *c) {
    int chunks = 0;
    for (;;) {
        if (c->out_pos == c->out.len) {
            if (c->file_left == 0)
                return true;
            if (chunks++ == CHUNKS_PER_TURN)
                return false;
            c->out.len = c->out_pos = 0;
            buf_reserve(&c->out, CHUNK);
            size_t want = c->out.cap < c->file_left ? c->out.cap : (size_t)c->file_left;
            ssize_t n = c->out.failed ? -1 : read(c->file, c->out.data, want);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0) {
                fprintf(stderr, "httpd: %s: %s\n", c->path, n < 0 ? strerror(errno) : "file shrank");
                close_conn(c);
                return false;
            }
            c->out.len = (size_t)n;
            c->file_left -= (uint64_t)n;
        }
        ssize_t n = send(c->fd, c->out.data + c->out_pos, c->out.len - c->out_pos, SEND_FLAGS);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                close_conn(c);
            return false;
        }
        c->out_pos += (size_t)n;
        size_t head = (size_t)n < c->head_left ? (size_t)n : c->head_left;
        c->head_left -= head;
        c->body_sent += (uint64_t)n - head;
        c->deadline = now_ms() + IDLE_TIMEOUT_MS;
    }
}

static void finish_response(struct conn *c) {
    log_request(c);
    close_file(c);
    c->out.len = c->out_pos = 0;
    if (c->out.cap > 4 * CHUNK) {
        free(c->out.data);
        c->out = (struct buf){0};
    }
    if (c->close_after) {
        if (shutdown(c->fd, SHUT_WR) != 0) {
            c->state = READING;
            close_conn(c);
            return;
        }
        c->state = LINGERING;
        c->lingered = 0;
        c->deadline = now_ms() + LINGER_TIMEOUT_MS;
    } else {
        c->state = READING;
        c->deadline = now_ms() + IDLE_TIMEOUT_MS;
    }
}

/* Runs the connection until it has to wait for its socket. */
static void advance(struct conn *c) {
    for (;;) {
        if (c->state == READING) {
            if (!parse_next(c))
                return;
        } else if (c->state == WRITING) {
            if (!write_some(c))
                return;
            finish_response(c);
        } else {
            return;
        }
    }
}

static void on_readable(struct conn *c) {
    if (c->state == LINGERING) {
        ssize_t n = recv(c->fd, c->in, sizeof c->in, 0);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            return;
        if (n <= 0 || (c->lingered += (size_t)n) > LINGER_MAX)
            close_conn(c);
        return;
    }
    ssize_t n = recv(c->fd, c->in + c->in_len, sizeof c->in - c->in_len, 0);
    if (n < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            close_conn(c);
        return;
    }
    if (n == 0)
        c->peer_done = true;
    c->in_len += (size_t)n;
    c->deadline = now_ms() + IDLE_TIMEOUT_MS;
    advance(c);
}

static void accept_connections(void) {
    for (int i = 0; i < 16 && active < MAX_CONNS; i++) {
        struct sockaddr_storage addr; /* wasi-libc's accept() writes to it even if unused */
        socklen_t addr_len = sizeof addr;
        int fd = accept(listen_fd, (struct sockaddr *)&addr, &addr_len);
        if (fd < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR || errno == ECONNABORTED)
                return;
            if (errno == EBADF || errno == ENOTSOCK || errno == EINVAL || errno == EOPNOTSUPP) {
                fprintf(stderr, "httpd: accept on LISTEN_FD=%d: %s\n", listen_fd, strerror(errno));
                exit(1);
            }
            fprintf(stderr, "httpd: accept: %s\n", strerror(errno));
            accept_paused_until = now_ms() + 1000;
            return;
        }
        int flags = fcntl(fd, F_GETFL);
        if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0) {
            fprintf(stderr, "httpd: cannot make a connection non-blocking: %s\n", strerror(errno));
            close(fd);
            return;
        }
        struct conn *c = NULL;
        for (int k = 0; k < MAX_CONNS && c == NULL; k++)
            if (conns[k].state == FREE)
                c = &conns[k];
        c->state = READING;
        c->fd = fd;
        c->deadline = now_ms() + IDLE_TIMEOUT_MS;
        c->in_len = 0;
        c->skip = 0;
        c->peer_done = false;
        c->file = -1;
        c->file_left = 0;
        c->out = (struct buf){0};
        active++;
        if (!listen_nonblocking)
            return;
    }
}

static void serve(void) {
    struct pollfd fds[MAX_CONNS + 1];
    struct conn *polled[MAX_CONNS + 1];
    for (;;) {
        int64_t now = now_ms();
        int64_t wait = -1;
        nfds_t n = 0;
        if (active < MAX_CONNS && now >= accept_paused_until) {
            fds[n] = (struct pollfd){.fd = listen_fd, .events = POLLIN};
            polled[n++] = NULL;
        } else if (active < MAX_CONNS) {
            wait = accept_paused_until - now;
        }
        for (int i = 0; i < MAX_CONNS; i++) {
            struct conn *c = &conns[i];
            if (c->state == FREE)
                continue;
            fds[n] = (struct pollfd){.fd = c->fd, .events = c->state == WRITING ? POLLOUT : POLLIN};
            polled[n++] = c;
            int64_t left = c->deadline > now ? c->deadline - now : 0;
            if (wait < 0 || left < wait)
                wait = left;
        }
        if (poll(fds, n, wait < 0 ? -1 : wait > INT_MAX ? INT_MAX : (int)wait) < 0) {
            if (errno == EINTR)
                continue;
            fprintf(stderr, "httpd: poll: %s\n", strerror(errno));
            exit(1);
        }
        for (nfds_t i = 0; i < n; i++) {
            if (fds[i].revents == 0)
                continue;
            struct conn *c = polled[i];
            if (c == NULL)
                accept_connections();
            else if (c->fd != fds[i].fd || c->state == FREE)
                continue;
            else if (c->state == WRITING)
                advance(c);
            else
                on_readable(c);
        }
        now = now_ms();
        for (int i = 0; i < MAX_CONNS; i++)
            if (conns[i].state != FREE && conns[i].deadline <= now)
                close_conn(&conns[i]);
    }
}

int main(int argc, char **argv) {
    if (argc > 2 || (argc == 2 && argv[1][0] == '-')) {
        fprintf(stderr, "usage: httpd [DIR]  (the listening socket's descriptor in LISTEN_FD)\n");
        return 2;
    }
    root = argc == 2 ? argv[1] : ".";

    const char *env = getenv("LISTEN_FD");
    if (env == NULL) {
        fprintf(stderr, "httpd: LISTEN_FD is not set: the host must pass a listening TCP socket "
                        "and put its descriptor number in LISTEN_FD\n");
        return 2;
    }
    char *end;
    errno = 0;
    long fd = strtol(env, &end, 10);
    if (*env < '0' || *env > '9' || *end != '\0' || errno != 0 || fd > INT_MAX) {
        fprintf(stderr, "httpd: invalid LISTEN_FD '%s': want a descriptor number\n", env);
        return 2;
    }
    listen_fd = (int)fd;
    int type;
    socklen_t type_len = sizeof type;
    if (getsockopt(listen_fd, SOL_SOCKET, SO_TYPE, &type, &type_len) != 0) {
        fprintf(stderr, "httpd: LISTEN_FD=%d: %s\n", listen_fd,
                errno == ENOTSOCK ? "not a socket" : strerror(errno));
        return 1;
    }
    if (type != SOCK_STREAM) {
        fprintf(stderr, "httpd: LISTEN_FD=%d: not a stream (TCP) socket\n", listen_fd);
        return 1;
    }
    struct stat st;
    if (stat(root, &st) != 0) {
        fprintf(stderr, "httpd: %s: %s\n", root, strerror(errno));
        return 1;
    }
    if (!S_ISDIR(st.st_mode)) {
        fprintf(stderr, "httpd: %s: not a directory\n", root);
        return 1;
    }
    size_t root_len = strlen(root);
    while (root_len > 1 && root[root_len - 1] == '/')
        root_len--;
    char *trimmed = strndup(root, root_len);
    fs_path = malloc(root_len + REQUEST_MAX + NAME_MAX + 16);
    if (trimmed == NULL || fs_path == NULL) {
        fprintf(stderr, "httpd: out of memory\n");
        return 1;
    }
    root = strcmp(trimmed, "/") == 0 ? "" : trimmed;

    int flags = fcntl(listen_fd, F_GETFL);
    listen_nonblocking = flags >= 0 && fcntl(listen_fd, F_SETFL, flags | O_NONBLOCK) == 0;
    for (int i = 0; i < MAX_CONNS; i++) {
        conns[i].state = FREE;
        conns[i].fd = -1;
        conns[i].file = -1;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    serve();
}
