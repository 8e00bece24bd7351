// SPDX-License-Identifier: MIT
/* derp_handshake.c - ClientInfo/ServerInfo crypto and JSON, key files. */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <sodium.h>

#include "derp_frame.h"
#include "derp_handshake.h"
#include "log.h"
#include "util.h"

int derp_parse_mesh_key(const char *text, uint8_t key[32])
{
	size_t len;

	while (*text && isspace((unsigned char)*text))
		text++;
	len = strlen(text);
	while (len && isspace((unsigned char)text[len - 1]))
		len--;
	return hex_decode(key, 32, text, len);
}

int derp_parse_client_info_json(const char *json, size_t len, struct client_info *ci,
				const char **why)
{
	json_error_t jerr;
	json_t *root, *v;
	const char *k;
	int ret = -EINVAL;

	root = json_loadb(json, len, JSON_DECODE_ANY, &jerr);
	if (!root) {
		*why = "ClientInfo is not valid JSON";
		return -EINVAL;
	}
	if (!json_is_object(root)) {
		*why = "ClientInfo JSON is not an object";
		goto out;
	}
	json_object_foreach(root, k, v)
	{
		if (strcasecmp(k, "meshKey") == 0) {
			if (!json_is_string(v) ||
			    derp_parse_mesh_key(json_string_value(v), ci->mesh_key) < 0) {
				*why = "invalid mesh key";
				goto out;
			}
			ci->has_mesh_key = !sodium_is_zero(ci->mesh_key, 32);
		} else if (strcasecmp(k, "version") == 0) {
			if (json_is_null(v))
				continue;
			if (!json_is_integer(v)) {
				*why = "ClientInfo version is not an integer";
				goto out;
			}
			ci->version = json_integer_value(v);
		} else if (strcasecmp(k, "CanAckPings") == 0) {
			if (json_is_null(v))
				continue;
			if (!json_is_boolean(v)) {
				*why = "ClientInfo CanAckPings is not a boolean";
				goto out;
			}
			ci->can_ack_pings = json_is_true(v);
		} else if (strcasecmp(k, "IsProber") == 0) {
			if (json_is_null(v))
				continue;
			if (!json_is_boolean(v)) {
				*why = "ClientInfo IsProber is not a boolean";
				goto out;
			}
			ci->is_prober = json_is_true(v);
		} else if (strcasecmp(k, "AppName") == 0) {
			if (!json_is_null(v) && !json_is_string(v)) {
				*why = "ClientInfo AppName is not a string";
				goto out;
			}
		}
	}
	ret = 0;
out:
	json_decref(root);
	return ret;
}

int derp_open_client_info(const uint8_t server_priv[32], const uint8_t *payload, size_t len,
			  struct client_info *ci, const char **why)
{
	uint8_t shared[crypto_box_BEFORENMBYTES];
	const uint8_t *nonce, *box;
	unsigned char *plain;
	size_t boxlen;
	int ret;

	memset(ci, 0, sizeof(*ci));
	if (len < DERP_MIN_CLIENTINFO_LEN + DERP_BOX_OVERHEAD) {
		*why = "ClientInfo too short";
		return -EINVAL;
	}
	if (len > DERP_MAX_CLIENTINFO_LEN) {
		*why = "ClientInfo too long";
		return -EINVAL;
	}
	memcpy(ci->key, payload, DERP_KEY_LEN);
	if (sodium_is_zero(ci->key, DERP_KEY_LEN)) {
		*why = "zero client key";
		return -EINVAL;
	}
	/* crypto_box_beforenm refuses low-order points (all-zero shared secret). */
	if (crypto_box_beforenm(shared, ci->key, server_priv) != 0) {
		*why = "low-order client key";
		return -EINVAL;
	}
	nonce = payload + DERP_KEY_LEN;
	box = nonce + DERP_NONCE_LEN;
	boxlen = len - DERP_MIN_CLIENTINFO_LEN;
	plain = malloc(boxlen - DERP_BOX_OVERHEAD + 1);
	if (!plain) {
		sodium_memzero(shared, sizeof(shared));
		*why = "out of memory";
		return -ENOMEM;
	}
	ret = crypto_box_open_easy_afternm(plain, box, boxlen, nonce, shared);
	if (ret != 0) {
		sodium_memzero(shared, sizeof(shared));
		*why = "ClientInfo box does not open";
		free(plain);
		return -EINVAL;
	}
	ret = derp_parse_client_info_json((const char *)plain, boxlen - DERP_BOX_OVERHEAD, ci, why);
	free(plain);
	if (ret == 0)
		memcpy(ci->shared, shared, sizeof(shared));
	sodium_memzero(shared, sizeof(shared));
	return ret;
}

int derp_seal_server_info_afternm(const uint8_t shared[32], uint8_t *out)
{
	const size_t jl = sizeof(DERP_SERVER_INFO_JSON) - 1;
	uint8_t *nonce = out + DERP_FRAME_HDR_LEN;

	derp_frame_put_header(out, DERP_FRAME_SERVER_INFO, DERP_NONCE_LEN + DERP_BOX_OVERHEAD + jl);
	randombytes_buf(nonce, DERP_NONCE_LEN);
	if (crypto_box_easy_afternm(nonce + DERP_NONCE_LEN, (const uint8_t *)DERP_SERVER_INFO_JSON,
				    jl, nonce, shared) != 0)
		return -EINVAL;
	return 0;
}

int derp_seal_server_info(const uint8_t server_priv[32], const uint8_t client_pub[32], uint8_t *out)
{
	uint8_t shared[crypto_box_BEFORENMBYTES];
	int ret;

	if (crypto_box_beforenm(shared, client_pub, server_priv) != 0)
		return -EINVAL;
	ret = derp_seal_server_info_afternm(shared, out);
	sodium_memzero(shared, sizeof(shared));
	return ret;
}

void derp_new_key(uint8_t priv[32], uint8_t pub[32])
{
	randombytes_buf(priv, 32);
	priv[0] &= 248;
	priv[31] = (priv[31] & 127) | 64;
	crypto_scalarmult_base(pub, priv);
}

static int write_key_file(const char *path, const uint8_t priv[32])
{
	char hex[65], tmp[4096], dir[4096], *slash;
	int fd, ret = 0;
	FILE *f;

	if (snprintf(tmp, sizeof(tmp), "%s.tmp.%d", path, (int)getpid()) >= (int)sizeof(tmp))
		return -ENAMETOOLONG;
	snprintf(dir, sizeof(dir), "%s", path);
	slash = strrchr(dir, '/');
	if (slash && slash != dir) {
		*slash = 0;
		if (mkdir(dir, 0777) < 0 && errno != EEXIST)
			return -errno;
	}
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	f = fdopen(fd, "w");
	if (!f) {
		ret = -errno;
		close(fd);
		unlink(tmp);
		return ret;
	}
	hex_encode(hex, priv, 32);
	fprintf(f, "{\n\t\"PrivateKey\": \"privkey:%s\"\n}", hex);
	sodium_memzero(hex, sizeof(hex));
	if (fflush(f) != 0 || fsync(fd) != 0)
		ret = -errno;
	if (fclose(f) != 0 && !ret)
		ret = -errno;
	if (!ret && rename(tmp, path) < 0)
		ret = -errno;
	if (ret)
		unlink(tmp);
	return ret;
}

int derp_load_or_create_key(const char *path, uint8_t priv[32], uint8_t pub[32])
{
	json_error_t jerr;
	json_t *root, *v;
	const char *s;
	size_t len;
	char *text;
	int ret = -EINVAL;

	text = read_file(path, 64 * 1024, &len);
	if (!text) {
		if (errno != ENOENT) {
			ret = -errno;
			log_err("reading key file %s: %s", path, strerror(errno));
			return ret;
		}
		derp_new_key(priv, pub);
		ret = write_key_file(path, priv);
		if (ret < 0)
			log_err("writing key file %s: %s", path, strerror(-ret));
		else
			log_info("created new key file %s", path);
		return ret;
	}
	root = json_loadb(text, len, 0, &jerr);
	sodium_memzero(text, len);
	free(text);
	if (!root || !json_is_object(root)) {
		log_err("key file %s: not a JSON object", path);
		goto out;
	}
	v = json_object_get(root, "PrivateKey");
	s = json_is_string(v) ? json_string_value(v) : NULL;
	if (!s || strncmp(s, "privkey:", 8) != 0 ||
	    hex_decode(priv, 32, s + 8, strlen(s + 8)) < 0) {
		log_err("key file %s: PrivateKey is not privkey:<64 hex>", path);
		goto out;
	}
	crypto_scalarmult_base(pub, priv);
	ret = 0;
out:
	json_decref(root);
	return ret;
}
